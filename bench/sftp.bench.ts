/**
 * SFTP speed: bitfog's fetch (sftp → spool) and store (spool → sftp) of one large file
 * and of many small files, against `rclone copy` (sftp remote, default settings) and
 * `scp -r` (which speaks SFTP in OpenSSH 9), all through the same sshd in the same run.
 *
 *   node --import tsx bench/sftp.bench.ts
 *
 * Sizes (env): BITFOG_BENCH_SFTP_BIG_BYTES (default 1 GiB), BITFOG_BENCH_SFTP_SMALL_FILES
 * (default 5000, 1–8 KiB each). Target: bitfog ≤ 1.0× rclone's time.
 *
 * bitfog runs as its CLI (a child process, start-up included, as for rclone and scp).
 * Its store includes verifying every written file's hash; its fetch includes hashing
 * everything read and writing it into the spool.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const BIN = path.join(root, 'bin', 'bitfog.mjs');
const BIG = Number(process.env.BITFOG_BENCH_SFTP_BIG_BYTES ?? 1024 * 1024 * 1024);
const SMALL = Number(process.env.BITFOG_BENCH_SFTP_SMALL_FILES ?? 5000);
const TARGET = 1.0;

interface Service {
  SFTP_HOST: string;
  SFTP_PORT: string;
  SFTP_USER: string;
  SFTP_KEY: string;
  SFTP_KNOWN_HOSTS: string;
  SFTP_ROOT: string;
}

function parseEnv(file: string): Service {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out as unknown as Service;
}

/** Runs a command to completion; returns seconds taken. Throws with its output on failure. */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code === 0) resolve(s);
      else reject(new Error(`${path.basename(cmd)} ${args.join(' ')} exited ${code}:\n${output.slice(-4000)}`));
    });
  });
}

async function makeBig(file: string, bytes: number): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const out = createWriteStream(file);
  const seed = randomBytes(1 << 20);
  let left = bytes;
  let i = 0;
  while (left > 0) {
    const chunk = Buffer.from(seed.subarray(0, Math.min(left, seed.length)));
    chunk.writeUInt32LE(i++, 0);
    left -= chunk.length;
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'close');
}

async function makeSmall(dir: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const sub = path.join(dir, `dir ${i % 50}`);
    if (i < 50) await fsp.mkdir(sub, { recursive: true });
    await fsp.writeFile(path.join(sub, `file #${i}.txt`), randomBytes(1024 + ((i * 7919) % 7168)));
  }
}

function fmt(s: number): string {
  return s.toFixed(2);
}

/** rclone is only needed here, not by the tests: install Debian's when missing and root. */
async function ensureRclone(): Promise<void> {
  const have = await run('rclone', ['version']).then(() => true, () => false);
  if (have) return;
  if (process.getuid?.() !== 0) throw new Error('rclone is not installed (apt-get install rclone)');
  await run('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-qq', '--no-install-recommends', 'rclone'], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

async function main(): Promise<void> {
  await ensureRclone();
  const work = await fsp.mkdtemp(path.join(process.env.BITFOG_BENCH_TMP ?? tmpdir(), 'bitfog-bench-sftp-'));
  const state = path.join(work, 'services');
  const script = path.join(root, 'test', 'services', 'sftp.sh');
  await run('bash', [script, 'start', state]);
  try {
    const s = parseEnv(path.join(state, 'sftp.env'));
    const env: NodeJS.ProcessEnv = { ...process.env, BITFOG_CACHE_DIR: path.join(work, 'cache'), NO_COLOR: '1' };
    delete env.SSH_AUTH_SOCK;
    const q = `key=${encodeURIComponent(s.SFTP_KEY)}&known_hosts=${encodeURIComponent(s.SFTP_KNOWN_HOSTS)}`;
    const sftpUrl = (dir: string) => `sftp://${s.SFTP_USER}@${s.SFTP_HOST}:${s.SFTP_PORT}${dir.split('/').map(encodeURIComponent).join('/')}?${q}`;
    // rclone's own check of each upload runs `md5sum` through a new SSH session per file;
    // on a busy test machine that alone takes seconds a file, so it is switched off here:
    // the comparison is with rclone at its fastest (bitfog still verifies every byte).
    const rcloneFlags = [
      '--config', '/dev/null', '-q', '--sftp-disable-hashcheck',
      '--sftp-host', s.SFTP_HOST, '--sftp-port', s.SFTP_PORT, '--sftp-user', s.SFTP_USER,
      '--sftp-key-file', s.SFTP_KEY, '--sftp-known-hosts-file', s.SFTP_KNOWN_HOSTS,
    ];
    const scpFlags = ['-q', '-r', '-P', s.SFTP_PORT, '-i', s.SFTP_KEY, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${s.SFTP_KNOWN_HOSTS}`];
    const remote = (dir: string) => `${s.SFTP_USER}@${s.SFTP_HOST}:${dir}`;

    const datasets = [
      { name: `${(BIG / 2 ** 30).toFixed(BIG % 2 ** 30 ? 2 : 0)} GiB file`, make: (d: string) => makeBig(path.join(d, 'big.bin'), BIG) },
      { name: `${SMALL} small files`, make: (d: string) => makeSmall(d, SMALL) },
    ];
    console.log(`sftp bench: ${datasets.map((d) => d.name).join(', ')}; sshd on 127.0.0.1; target bitfog ≤ ${TARGET.toFixed(1)}× rclone`);

    for (const [i, ds] of datasets.entries()) {
      const local = path.join(work, `data-${i}`);
      await ds.make(local);

      // ---- store: local data → sftp
      const spool = path.join(work, `spool-store-${i}`);
      const destB = path.join(s.SFTP_ROOT, `store-bitfog-${i}`);
      await timed(process.execPath, [BIN, 'store', spool, sftpUrl(destB)], env); // records the empty destination
      await timed(process.execPath, [BIN, 'fetch', local, spool, '--reserve', '0'], env);
      const bStore = await timed(process.execPath, [BIN, 'store', spool, sftpUrl(destB)], env);
      await fsp.rm(spool, { recursive: true, force: true });
      await fsp.rm(destB, { recursive: true, force: true });

      const destR = path.join(s.SFTP_ROOT, `store-rclone-${i}`);
      const rStore = await timed('rclone', ['copy', ...rcloneFlags, local, `:sftp:${destR}`]);
      await fsp.rm(destR, { recursive: true, force: true });

      const destS = path.join(s.SFTP_ROOT, `store-scp-${i}`);
      const sStore = await timed('scp', [...scpFlags, local, remote(destS)]);

      console.log(`store ${ds.name}: bitfog ${fmt(bStore)}s, rclone ${fmt(rStore)}s, ratio ${fmt(bStore / rStore)} (target ≤ ${TARGET.toFixed(1)})`);
      console.log(`store ${ds.name}: bitfog ${fmt(bStore)}s, scp ${fmt(sStore)}s, ratio ${fmt(bStore / sStore)}`);

      // ---- fetch: sftp → local (the scp copy on the server is the source)
      const src = destS;
      const fspool = path.join(work, `spool-fetch-${i}`);
      const empty = path.join(work, `empty-${i}`);
      await fsp.mkdir(empty);
      await timed(process.execPath, [BIN, 'store', fspool, empty], env); // records the empty destination
      const bFetch = await timed(process.execPath, [BIN, 'fetch', sftpUrl(src), fspool, '--reserve', '0', '--no-cache'], env);
      await fsp.rm(fspool, { recursive: true, force: true });

      const outR = path.join(work, `fetch-rclone-${i}`);
      const rFetch = await timed('rclone', ['copy', ...rcloneFlags, `:sftp:${src}`, outR]);
      await fsp.rm(outR, { recursive: true, force: true });

      const outS = path.join(work, `fetch-scp-${i}`);
      const sFetch = await timed('scp', [...scpFlags, remote(src), outS]);
      await fsp.rm(outS, { recursive: true, force: true });

      console.log(`fetch ${ds.name}: bitfog ${fmt(bFetch)}s, rclone ${fmt(rFetch)}s, ratio ${fmt(bFetch / rFetch)} (target ≤ ${TARGET.toFixed(1)})`);
      console.log(`fetch ${ds.name}: bitfog ${fmt(bFetch)}s, scp ${fmt(sFetch)}s, ratio ${fmt(bFetch / sFetch)}`);

      await fsp.rm(src, { recursive: true, force: true });
      await fsp.rm(local, { recursive: true, force: true });
    }
  } finally {
    await run('bash', [script, 'stop', state]).catch(() => {});
    await fsp.rm(work, { recursive: true, force: true });
  }
}

await main();
