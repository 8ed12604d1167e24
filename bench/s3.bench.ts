/**
 * S3 store benchmark: `bitfog store` from a spool vs `rclone copy` from a local tree, into
 * the same Ceph RADOS Gateway (started here through test/services/s3.sh), in one run.
 *
 *   node --import tsx bench/s3.bench.ts
 *
 * Sizes (environment): BENCH_S3_LARGE_BYTES (default 2 GiB) in BENCH_S3_LARGE_FILES files
 * (default 8); BENCH_S3_SMALL_FILES small files (default 10000) of 1–8 KiB in 100
 * directories; BENCH_S3_REPEAT rounds per comparison (default 2, best kept). The gateway
 * keeps objects in RAM (memstore), about twice what it holds: the default run needs about
 * 6 GiB of free memory.
 * Target: bitfog's time ≤ 1.0× rclone's. BENCH_S3_OPTIONS adds URL options to bitfog's URL
 * (e.g. `part_size=16M`), to compare settings; BENCH_VERBOSE=1 prints every round.
 *
 * Each tool runs with its defaults against the same endpoint. bitfog's time is the whole
 * `bitfog store` command (start-up, listing the destination, writing, verifying, the final
 * listing with its HEAD per object, and recording the state on the spool); the fetch that
 * filled the spool beforehand is not timed, as rclone's reading of the source is part of
 * its copy.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const GiB = 1024 ** 3;
const largeBytes = Number(process.env.BENCH_S3_LARGE_BYTES ?? 2 * GiB);
const largeFiles = Number(process.env.BENCH_S3_LARGE_FILES ?? 8);
const smallFiles = Number(process.env.BENCH_S3_SMALL_FILES ?? 10_000);
const repeat = Math.max(1, Number(process.env.BENCH_S3_REPEAT ?? 2));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'inherit'], cwd: root });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function timed(what: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const t0 = process.hrtime.bigint();
  const code = await run(cmd, args, env);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (code !== 0) throw new Error(`${what} exited ${code}`);
  return s;
}

function parseEnv(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

async function writeRandomFile(file: string, size: number): Promise<void> {
  const out = createWriteStream(file);
  let left = size;
  while (left > 0) {
    const n = Math.min(left, 1 << 20);
    if (!out.write(randomBytes(n))) await new Promise<void>((r) => out.once('drain', () => r()));
    left -= n;
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

const work = await fsp.mkdtemp(path.join(tmpdir(), 'bitfog-s3-bench-'));
const state = path.join(work, 'service');
const script = path.join(root, 'test', 'services', 's3.sh');
let started = false;
try {
  if ((await run('bash', [script, 'start', state])) !== 0) throw new Error('the S3 test service did not start');
  started = true;
  const s3 = parseEnv(path.join(state, 's3.env'));
  const env = { ...process.env, ...s3 };
  const haveRclone = spawnSync('rclone', ['version'], { stdio: 'ignore' }).status === 0;
  if (!haveRclone) console.log('rclone is not installed (Debian package "rclone"): measuring bitfog alone');
  // rclone reads its keys from the environment: nothing secret on a command line.
  // rclone's on-the-fly remote ":s3:" configured through its environment variables (the
  // endpoint's ":" cannot stand unquoted in a connection string, and keys stay off argv).
  const rcloneEnv: NodeJS.ProcessEnv = {
    ...env,
    RCLONE_S3_PROVIDER: 'Ceph',
    RCLONE_S3_ENDPOINT: s3.S3_ENDPOINT,
    RCLONE_S3_REGION: 'us-east-1',
    RCLONE_S3_ACCESS_KEY_ID: s3.AWS_ACCESS_KEY_ID,
    RCLONE_S3_SECRET_ACCESS_KEY: s3.AWS_SECRET_ACCESS_KEY,
  };
  // rclone's AWS SDK fails on a custom CA bundle ("unsupported transport"); the endpoint is plain http.
  delete rcloneEnv.AWS_CA_BUNDLE;
  const rcloneRemote = (p: string) => `:s3:${s3.S3_TEST_BUCKET}/${p}`;
  // BENCH_S3_OPTIONS: more URL options for bitfog, e.g. `part_size=16M&queue_size=2`.
  const extraOptions = process.env.BENCH_S3_OPTIONS ? `&${process.env.BENCH_S3_OPTIONS}` : '';
  const bitfogUrl = (p: string) => `s3://${s3.S3_TEST_BUCKET}/${p}/?endpoint=${encodeURIComponent(s3.S3_ENDPOINT!)}${extraOptions}`;
  const bin = path.join(root, 'bin', 'bitfog.mjs');
  const cache = ['--cache-dir', path.join(work, 'cache'), '--quiet'];

  // bitfog and rclone alternate for BENCH_S3_REPEAT rounds (default 2; the order flips each
  // round) and the best time of each is kept: the gateway slows down as it fills and while
  // it collects garbage, so the order and a noisy minute must not decide the comparison.
  // What each round uploaded is deleted again (rclone purge) and the gateway's garbage
  // collected at once: its RAM stays bounded, and no collection of one contender's data
  // runs while the other is measured (it cost either side up to 6 s of ~30).
  const collectGarbage = async () => {
    if ((await run('bash', [script, 'gc', state])) !== 0) throw new Error('s3.sh gc failed');
  };
  const measure = async (label: string, dir: string, name: string) => {
    const best = { bitfog: Infinity, rclone: Infinity };
    for (let round = 0; round < repeat; round++) {
      const runBitfog = async () => {
        const spool = path.join(work, `spool-${name}-${round}`);
        const url = bitfogUrl(`bitfog-${name}-${round}`);
        await timed('bitfog store (first trip)', process.execPath, [bin, 'store', spool, url, ...cache], env);
        await timed('bitfog fetch', process.execPath, [bin, 'fetch', dir, spool, ...cache], env);
        await run('sync', []);
        const b = await timed('bitfog store', process.execPath, [bin, 'store', spool, url, ...cache], env);
        if (process.env.BENCH_VERBOSE) console.log(`  (${label}, round ${round + 1}: bitfog store took ${b.toFixed(2)}s)`);
        best.bitfog = Math.min(best.bitfog, b);
        await fsp.rm(spool, { recursive: true, force: true });
        if (haveRclone) await run('rclone', ['purge', rcloneRemote(`bitfog-${name}-${round}`)], rcloneEnv);
        await collectGarbage();
      };
      const runRclone = async () => {
        if (!haveRclone) return;
        await run('sync', []);
        const r = await timed('rclone copy', 'rclone', ['copy', dir, rcloneRemote(`rclone-${name}-${round}`)], rcloneEnv);
        if (process.env.BENCH_VERBOSE) console.log(`  (${label}, round ${round + 1}: rclone copy took ${r.toFixed(2)}s)`);
        best.rclone = Math.min(best.rclone, r);
        await run('rclone', ['purge', rcloneRemote(`rclone-${name}-${round}`)], rcloneEnv);
        await collectGarbage();
      };
      if (round % 2 === 0) {
        await runBitfog();
        await runRclone();
      } else {
        await runRclone();
        await runBitfog();
      }
    }
    if (!haveRclone) {
      console.log(`${label}: bitfog ${best.bitfog.toFixed(2)}s (best of ${repeat}; target: ≤ 1.0× rclone copy)`);
      return;
    }
    console.log(`${label}, best of ${repeat}: bitfog ${best.bitfog.toFixed(2)}s, rclone ${best.rclone.toFixed(2)}s, ratio ${(best.bitfog / best.rclone).toFixed(2)} (target ≤ 1.0)`);
  };

  const large = path.join(work, 'large');
  await fsp.mkdir(large);
  for (let i = 0; i < largeFiles; i++) {
    const base = Math.floor(largeBytes / largeFiles);
    await writeRandomFile(path.join(large, `large ${i}.bin`), i === largeFiles - 1 ? largeBytes - base * (largeFiles - 1) : base);
  }
  await measure(`store ${(largeBytes / GiB).toFixed(2)} GiB in ${largeFiles} files into S3`, large, 'large');
  await fsp.rm(large, { recursive: true, force: true });

  const small = path.join(work, 'small');
  for (let d = 0; d < 100; d++) await fsp.mkdir(path.join(small, `dir ${d}`), { recursive: true });
  for (let i = 0; i < smallFiles; i++) {
    await fsp.writeFile(path.join(small, `dir ${i % 100}`, `file ${i}.txt`), randomBytes(1024 + Math.floor(Math.random() * 7 * 1024)));
  }
  await measure(`store ${smallFiles} small files into S3`, small, 'small');
} finally {
  if (started) await run('bash', [script, 'stop', state]);
  await fsp.rm(work, { recursive: true, force: true });
}
