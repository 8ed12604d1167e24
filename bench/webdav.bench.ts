/**
 * Benchmark: `bitfog store` into an Apache mod_dav WebDAV share vs `rclone copy` into the
 * same share, in the same run, for one large file and for many small files.
 *
 *   node --import tsx bench/webdav.bench.ts
 *
 * Sizes (env): WEBDAV_BENCH_BIG_BYTES (default 1 GiB), WEBDAV_BENCH_SMALL_FILES (default
 * 5000 files of 1–16 KiB). Target: bitfog ≤ 1.0× rclone's time.
 *
 * What is timed: for bitfog, `bitfog store <spool> webdav://…` (the spool was filled by an
 * untimed `bitfog fetch` of the same tree, as at a real destination site); for rclone,
 * `rclone copy <tree> :webdav:…` with rclone's defaults. Both write into fresh collections
 * of the same server; each run is followed by a check that every byte arrived.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const repo = path.resolve(import.meta.dirname, '..');
const bigBytes = Number(process.env.WEBDAV_BENCH_BIG_BYTES ?? 1024 ** 3);
const smallFiles = Number(process.env.WEBDAV_BENCH_SMALL_FILES ?? 5000);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code: code ?? 1, out }));
  });
}

async function must(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, env);
  if (r.code !== 0) throw new Error(`${path.basename(cmd)} ${args[0]} failed (${r.code}):\n${r.out}`);
  return r.out;
}

async function timed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  // Flush what earlier steps wrote, so neither tool pays for the other's dirty pages.
  await run('sync', []);
  const t0 = process.hrtime.bigint();
  await must(cmd, args, env);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function parseEnv(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Total bytes and file count of a local tree, skipping Apache's .DAV property stores. */
async function treeSize(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || e.parentPath.includes(`${path.sep}.DAV`)) continue;
    files++;
    bytes += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return { files, bytes };
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(process.env.BITFOG_BENCH_TMP ?? tmpdir(), 'bitfog-bench-webdav-'));
  // Apache's worker user must be able to reach the share's directory inside.
  await chmod(work, 0o755);
  const state = path.join(work, 'state');
  await mkdir(state);
  // Measure the bundled CLI, as installed, and never a stale bundle.
  await must(process.execPath, [path.join(repo, 'scripts', 'build.mjs')]);
  const service = path.join(repo, 'test', 'services', 'webdav.sh');
  await must('bash', [service, 'start', state]);
  try {
    const svc = parseEnv(path.join(state, 'webdav.env'));
    const httpUrl = svc.WEBDAV_URL!.replace(/^webdav:/, 'http:');
    const obscured = (await must('rclone', ['obscure', svc.WEBDAV_PASSWORD!])).trim();
    const rcloneEnv = {
      ...process.env,
      RCLONE_CONFIG: path.join(work, 'rclone.conf'),
      RCLONE_WEBDAV_URL: httpUrl,
      RCLONE_WEBDAV_USER: svc.WEBDAV_USER!,
      RCLONE_WEBDAV_PASS: obscured,
      RCLONE_WEBDAV_VENDOR: 'other',
    };
    const bitfogEnv = {
      ...process.env,
      BITFOG_WEBDAV_USER: svc.WEBDAV_USER!,
      BITFOG_WEBDAV_PASSWORD: svc.WEBDAV_PASSWORD!,
      BITFOG_CACHE_DIR: path.join(work, 'cache'),
    };
    const bitfog = [path.join(repo, 'bin', 'bitfog.mjs')];

    const cases: Array<{ what: string; make: (dir: string) => Promise<void> }> = [
      {
        what: `store of one ${formatBytes(bigBytes)} file`,
        make: async (dir) => {
          const block = randomBytes(1 << 20);
          await pipeline(
            Readable.from((function* () {
              let i = 0;
              for (let left = bigBytes; left > 0; left -= block.length) {
                const chunk = Buffer.from(block.subarray(0, Math.min(left, block.length)));
                chunk.writeUInt32LE(i++, 0);
                yield chunk;
              }
            })()),
            createWriteStream(path.join(dir, 'big.bin')),
          );
        },
      },
      {
        what: `store of ${smallFiles} small files`,
        make: async (dir) => {
          for (let i = 0; i < smallFiles; i++) {
            const sub = path.join(dir, `d${Math.floor(i / 500)}`);
            if (i % 500 === 0) await mkdir(sub);
            await writeFile(path.join(sub, `f ${i}.txt`), randomBytes(1024 + ((i * 7919) % (15 * 1024))));
          }
        },
      },
    ];

    const startup = await timed(process.execPath, [...bitfog, '--version'], bitfogEnv);
    console.log(`(bitfog CLI start-up, included in its times below: ${startup.toFixed(2)}s)`);

    for (const [n, c] of cases.entries()) {
      const src = path.join(work, `src${n}`);
      await mkdir(src);
      await c.make(src);
      const want = await treeSize(src);
      const spool = path.join(work, `spool${n}`);
      await must(process.execPath, [...bitfog, 'fetch', src, spool, '--quiet'], bitfogEnv);

      // Alternate which tool goes first, so neither always meets a warmer server.
      const bitfogDir = `bitfog-${n}`;
      const rcloneDir = `rclone-${n}`;
      const runBitfog = () => timed(process.execPath, [...bitfog, 'store', spool, `${svc.WEBDAV_URL}${bitfogDir}/`, '--quiet'], bitfogEnv);
      const runRclone = () => timed('rclone', ['copy', src, `:webdav:${rcloneDir}`], rcloneEnv);
      let tBitfog: number;
      let tRclone: number;
      if (n % 2 === 0) {
        tBitfog = await runBitfog();
        tRclone = await runRclone();
      } else {
        tRclone = await runRclone();
        tBitfog = await runBitfog();
      }

      for (const [who, dir] of [['bitfog', bitfogDir], ['rclone', rcloneDir]] as const) {
        const got = await treeSize(path.join(svc.WEBDAV_ROOT_DIR!, dir));
        if (got.files !== want.files || got.bytes !== want.bytes) {
          throw new Error(`${who} wrote ${got.files} files / ${got.bytes} bytes, expected ${want.files} / ${want.bytes}`);
        }
      }
      console.log(`${c.what}: bitfog ${tBitfog.toFixed(2)}s, rclone ${tRclone.toFixed(2)}s, ratio ${(tBitfog / tRclone).toFixed(2)} (target ≤ 1.0)`);
      await rm(src, { recursive: true, force: true });
      await rm(spool, { recursive: true, force: true });
      await rm(path.join(svc.WEBDAV_ROOT_DIR!, bitfogDir), { recursive: true, force: true });
      await rm(path.join(svc.WEBDAV_ROOT_DIR!, rcloneDir), { recursive: true, force: true });
    }
  } finally {
    await run('bash', [service, 'stop', state]);
    if (!process.env.BITFOG_KEEP_TMP) await rm(work, { recursive: true, force: true });
    else if (existsSync(work)) console.error(`kept ${work}`);
  }
}

function formatBytes(n: number): string {
  if (n >= 1024 ** 3 && n % 1024 ** 3 === 0) return `${n / 1024 ** 3} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(0)} MiB`;
  return `${n} B`;
}

await main();
