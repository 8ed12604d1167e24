/** Units of the wire format: records, modes, splitting, addresses, ranges. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeRecord, fromGoFileMode, goFileMode, parseRecord, RecordSplitter } from '../src/backends/http/wire.ts';
import { parseAddr, parseRange, rdiffBlockLength } from '../src/server/server.ts';

describe('CRC-64/GO-ISO', () => {
  it('matches the bit-by-bit definition for every length and split (slicing-by-8 head and tail)', async () => {
    const { crc64, Crc64 } = await import('../src/backends/http/crc64.ts');
    const { randomBytes } = await import('node:crypto');
    const reference = (data: Uint8Array) => {
      let c = (1n << 64n) - 1n;
      for (const b of data) {
        c ^= BigInt(b);
        for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ 0xd800000000000000n : c >> 1n;
      }
      return c ^ ((1n << 64n) - 1n);
    };
    for (let n = 0; n < 70; n++) {
      const d = randomBytes(n);
      assert.equal(crc64(d), reference(d), `length ${n}`);
      const c = new Crc64();
      c.update(d.subarray(0, n >> 1));
      c.update(d.subarray(n >> 1));
      assert.equal(c.digest(), reference(d), `split at ${n >> 1} of ${n}`);
    }
    assert.equal(crc64(Buffer.from('123456789')), 13333283586479230977n);
  });
});

describe('wire format', () => {
  it('keeps a 64-bit hash exact through encode and parse (JSON.parse would round it)', () => {
    const line = encodeRecord({ name: 'x', size: 9, mode: 420, mtime: 1, hash: 18446744073709551615n }, false);
    assert.equal(line, '{"name":"x","size":9,"mode":420,"mtime":1,"hash":18446744073709551615}\n');
    assert.equal(parseRecord(line).hash, 18446744073709551615n);
    assert.notEqual(BigInt(JSON.parse(line).hash), 18446744073709551615n, 'JSON.parse really does round');
    assert.throws(() => parseRecord('{"name":"x","hash":18446744073709551616}'));
    assert.throws(() => parseRecord('{"name":"x","hash":1.5e19}'));
  });

  it('maps Go FileMode bits both ways', () => {
    for (const [kind, mode] of [['file', 0o644], ['file', 0o4755], ['file', 0o2640], ['file', 0o1777], ['symlink', 0o777], ['directory', 0o755]] as const) {
      assert.deepEqual(fromGoFileMode(goFileMode(kind, mode)), { kind, mode });
    }
    assert.equal(goFileMode('symlink', 0o777), 134218239);
    assert.equal(fromGoFileMode(-2147483648 + 0o755).kind, 'directory', 'int32 ModeDir from a classic encoder');
    assert.equal(fromGoFileMode(33554432 + 0o644).kind, 'other', 'named pipe');
  });

  it('splits listings the way Go\'s decoder accepts them: CRLF, pretty-printed, no final newline, split anywhere', () => {
    const text = '{"name":"a}b","size":1}\r\n{\n  "name": "c\\"{",\n  "size": 2\n}{"name":"d","size":3}';
    for (let cut = 0; cut <= text.length; cut++) {
      const sp = new RecordSplitter();
      const got = [...sp.push(text.slice(0, cut)), ...sp.push(text.slice(cut))];
      sp.end();
      assert.deepEqual(got.map((g) => parseRecord(g).name), ['a}b', 'c"{', 'd']);
    }
    assert.throws(() => new RecordSplitter().push('[{"name":"a"}]'), /unexpected/);
    const sp = new RecordSplitter();
    sp.push('{"name":"trunc');
    assert.throws(() => sp.end(), /middle of a record/);
  });

  it('parses listen addresses', () => {
    assert.deepEqual(parseAddr(':8675'), { host: undefined, port: 8675 });
    assert.deepEqual(parseAddr('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseAddr('[::1]:80'), { host: '::1', port: 80 });
    assert.deepEqual(parseAddr('9000'), { host: undefined, port: 9000 });
    assert.throws(() => parseAddr('host'), /invalid listen address/);
    assert.throws(() => parseAddr(':99999'), /invalid listen address/);
  });

  it('parses single byte ranges', () => {
    assert.deepEqual(parseRange('bytes=0-0', 10), { start: 0, end: 1 });
    assert.deepEqual(parseRange('bytes=5-', 10), { start: 5, end: 10 });
    assert.deepEqual(parseRange('bytes=-3', 10), { start: 7, end: 10 });
    assert.deepEqual(parseRange('bytes=8-100', 10), { start: 8, end: 10 });
    assert.equal(parseRange('bytes=10-', 10), 'unsatisfiable');
    assert.equal(parseRange('bytes=0-1,3-4', 10), undefined);
    assert.equal(parseRange('items=0-1', 10), undefined);
    assert.equal(parseRange('bytes=5-2', 10), undefined);
  });

  it('chooses librsync\'s block length', () => {
    assert.equal(rdiffBlockLength(12), 256);
    assert.equal(rdiffBlockLength(300_013), 0x200);
    assert.equal(rdiffBlockLength(5 * 1024 * 1024), 0x880);
    assert.equal(rdiffBlockLength(1024 ** 3), 0x8000);
  });
});
