/**
 * Delta transfer benchmark: what bitfog carries for a changed large file, and how fast it
 * rebuilds it, against rdiff (librsync) and rsync's batch mode in the same run.
 *
 * Workload (the issue's): a file of random bytes (default 1 GiB), then the same file with
 * 20 scattered 64 KiB regions overwritten and 1 MiB inserted in the middle.
 *
 *   bitfog carries  = new chunks + recipe + the base file's signature (the destination's
 *                     snapshot carries it to the source; it is this file's share)
 *   rdiff carries   = `rdiff delta` against `rdiff signature` (the signature not counted)
 *   rsync carries   = the batch file of `rsync --only-write-batch --no-whole-file`
 *
 * Targets: bitfog ≤ 2 × rdiff's delta; assembling ≤ 1.5 × `rdiff patch`, measured on the
 * real path below (both durable); the library lines are components, for finding where time goes.
 *
 * Assembling is timed twice: the library functions (into a new file, against `rdiff patch`
 * into a new file: `assembleInto` with the local backend's positional reads and writes,
 * which store uses on local disks, and `assemble` as a stream, which it uses for the
 * other destinations), and the real path, `bitfog store` of the carried delta
 * into a local destination (its whole run: snapshot from the warm hash cache, assembly,
 * fsync, rename, signature bookkeeping) against `rdiff patch` followed by `sync` of its
 * output into the same directory: several rounds, alternating which goes first, each run
 * after the same warm-up write there (see `warmUp` and `compareRealPath`), best of each.
 * The real path's own costs beyond assembling (starting the CLI, the manifest, fsync of
 * the new file, recording its signature) count against it.
 *
 * Usage: node --import tsx bench/delta.bench.ts
 * Env: BITFOG_BENCH_DELTA_MIB (file size in MiB, default 1024), BITFOG_BENCH_TMP (where the
 * temporary files go, default the system temp dir), BITFOG_BENCH_REPEAT (timed runs, best
 * kept, default 2), BITFOG_BENCH_REAL_ROUNDS (rounds of the real path, default 3). Needs the Debian packages rdiff and rsync; without them those lines
 * say "skipped".
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { cp, link, mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pipeline } from 'node:stream/promises';
import { chunkStream } from '../src/core/delta/chunker.ts';
import { RACY_WINDOW_MS } from '../src/core/hashcache.ts';
import { bitfogArgs, timed, timedSteps } from './lib.ts';
import { workerChunkHasher } from '../src/core/delta/hasher.ts';
import { assemble, assembleInto as assemblePositional, DeltaPlanner, encodeRecipe } from '../src/core/delta/recipe.ts';
import { LocalBackend } from '../src/backends/local/index.ts';
import { toRelPath } from '../src/core/paths.ts';
import { ChunkIndex, encodeSignature, signContent } from '../src/core/delta/signature.ts';

const MiB = 1 << 20;
const KiB = 1024;
const size = Math.round(Number(process.env.BITFOG_BENCH_DELTA_MIB ?? 1024) * MiB);
const repeat = Math.max(1, Number(process.env.BITFOG_BENCH_REPEAT ?? 2));
const realRounds = Math.max(1, Number(process.env.BITFOG_BENCH_REAL_ROUNDS ?? 3));
const dir = await mkdtemp(path.join(process.env.BITFOG_BENCH_TMP ?? tmpdir(), 'bitfog-delta-bench-'));

const mib = (n: number) => `${(n / MiB).toFixed(2)} MiB`;
const secs = (n: number) => `${n.toFixed(2)}s`;
const now = () => performance.now() / 1000;

function have(tool: string): boolean {
  return spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
}

function run(cmd: string, args: string[]): number {
  const t0 = now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args[0]} failed: ${r.stderr?.toString().trim()}`);
  return now() - t0;
}

async function best(fn: () => Promise<number> | number): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < repeat; i++) t = Math.min(t, await fn());
  return t;
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(file, { highWaterMark: MiB })) h.update(b);
  return h.digest('hex');
}

/** Writes the base file (random) and the changed file, streaming. */
async function makeFiles(oldFile: string, newFile: string): Promise<void> {
  const block = Buffer.allocUnsafe(4 * MiB);
  const fd = await open(oldFile, 'w');
  for (let at = 0; at < size; at += block.length) {
    randomFillSync(block);
    await fd.write(block, 0, Math.min(block.length, size - at));
  }
  await fd.close();
  // 20 regions spread over the file (not aligned to anything), 1 MiB inserted in the middle.
  const edits = Array.from({ length: 20 }, (_, i) => Math.floor(((i + 0.37) * size) / 20) + i * 4099).filter((o) => o + 64 * KiB <= size);
  const insertAt = Math.floor(size / 2) + 12345;
  const out = createWriteStream(newFile);
  let pos = 0;
  async function* changed() {
    for await (const piece of createReadStream(oldFile, { highWaterMark: MiB }) as AsyncIterable<Buffer>) {
      const b = Buffer.from(piece);
      for (const e of edits) {
        const from = Math.max(e, pos);
        const to = Math.min(e + 64 * KiB, pos + b.length);
        if (from < to) randomFillSync(b, from - pos, to - from);
      }
      if (insertAt >= pos && insertAt < pos + b.length) {
        yield b.subarray(0, insertAt - pos);
        yield randomFillSync(Buffer.allocUnsafe(MiB));
        yield b.subarray(insertAt - pos);
      } else yield b;
      pos += b.length;
    }
  }
  await pipeline(changed, out);
}

/**
 * The real path: `bitfog store` of `newFile` as a delta against `oldFile` into a local
 * destination, through the CLI, against `rdiff patch` + `sync` into the same directory.
 * Set up once: a first store records the base's signature (and warms the hash cache), a
 * fetch carries the delta. Then `rounds` rounds, each timing both contenders, the order
 * alternating between rounds and each contender preceded by the same warm-up write (see
 * `warmUp`); the best time of each is kept. Between rounds the base is put back and an
 * untimed store with an empty spool records it in the hash cache again (a new link changes
 * its ctime), and the carried spool is restored. Every bitfog result is checked.
 */
async function compareRealPath(
  oldFile: string,
  newFile: string,
  rdiffDurable: (siteB: string) => Promise<number>,
  rounds: number,
): Promise<{ bitfog: number; rdiff: number }> {
  const root = path.join(dir, 'real-path');
  const [siteA, siteB, spool, carried, scratch] = ['site-a', 'site-b', 'spool', 'spool as carried', 'spool scratch'].map((d) => path.join(root, d)) as [string, string, string, string, string];
  await mkdir(siteA, { recursive: true });
  await mkdir(siteB, { recursive: true });
  // Links, not copies: same bytes, no extra GiB written before the measurement.
  await link(newFile, path.join(siteA, 'disk.img'));
  const env = { BITFOG_CACHE_DIR: path.join(root, 'cache'), BITFOG_DELTA_MIN_SIZE: String(Math.min(64 * MiB, Math.floor(size / 2))) };
  const cli = (...args: string[]) => {
    const [cmd, argv] = bitfogArgs(...args, '--quiet');
    return timed(cmd, argv, { env });
  };
  /** Puts the base in place, aged past the hash cache's racy window, and records it. */
  const placeBase = async (into: string) => {
    await rm(path.join(siteB, 'disk.img'), { force: true });
    await link(oldFile, path.join(siteB, 'disk.img'));
    // A base that has not changed for a while, as in real use: one linked just now is
    // within the hash cache's racy window, and the timed store would hash it again.
    await new Promise((resolve) => setTimeout(resolve, RACY_WINDOW_MS + 500));
    await cli('store', into, pathToFileURL(siteB).href);
  };
  await placeBase(spool);
  await cli('fetch', pathToFileURL(siteA).href, spool);
  let bytesCarried = 0;
  for (const e of await readdir(spool, { recursive: true, withFileTypes: true })) if (e.isFile()) bytesCarried += (await stat(path.join(e.parentPath ?? e.path, e.name))).size;
  if (bytesCarried > size / 2) throw new Error(`bitfog fetch carried ${mib(bytesCarried)}: not a delta`);
  await cp(spool, carried, { recursive: true });

  const timeBitfog = async () => {
    await warmUp(siteB, 2 * size);
    const seconds = await cli('store', spool, pathToFileURL(siteB).href);
    if ((await sha256File(path.join(siteB, 'disk.img'))) !== (await sha256File(newFile))) throw new Error('bitfog store wrote a file that differs from the changed file');
    return seconds;
  };
  const timeRdiff = async () => {
    await warmUp(siteB, 2 * size);
    return rdiffDurable(siteB);
  };
  let bitfog = Infinity;
  let rdiff = Infinity;
  for (let round = 0; round < rounds; round++) {
    if (round > 0) {
      await rm(scratch, { recursive: true, force: true });
      await placeBase(scratch);
      await rm(spool, { recursive: true });
      await cp(carried, spool, { recursive: true });
    }
    if (round % 2 === 0) {
      rdiff = Math.min(rdiff, await timeRdiff());
      bitfog = Math.min(bitfog, await timeBitfog());
    } else {
      bitfog = Math.min(bitfog, await timeBitfog());
      rdiff = Math.min(rdiff, await timeRdiff());
    }
  }
  return { bitfog, rdiff };
}

/**
 * Writes and deletes a file of `bytes` in `dir`, durably. The virtual disk of a small VM
 * writes a region it never wrote before several times slower than one it did (measured:
 * 1 GiB in 4.8 s against 1.5 s); after this, both durable runs write where files were
 * before, as they would on a disk in use.
 */
async function warmUp(dir: string, bytes: number): Promise<void> {
  const file = path.join(dir, 'warm-up.tmp');
  await timed('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${Math.ceil(bytes / MiB)}`, 'conv=fsync', 'status=none']);
  await rm(file);
  await timed('sync', []);
}

try {
  const oldFile = path.join(dir, 'base.img');
  const newFile = path.join(dir, 'changed.img');
  console.error(`[delta bench] writing ${mib(size)} of random data and its changed copy under ${path.basename(dir)}`);
  await makeFiles(oldFile, newFile);
  const newSize = (await stat(newFile)).size;
  const newHash = await sha256File(newFile);

  // --- bitfog: signature at the destination, plan + carry at the source, assemble at the destination.
  let signed!: Awaited<ReturnType<typeof signContent>>;
  const tSign = await best(async () => {
    const t0 = now();
    signed = await signContent(createReadStream(oldFile, { highWaterMark: MiB }), size);
    return now() - t0;
  });
  const signatureBytes = encodeSignature(signed.signature).length;

  const spoolDir = path.join(dir, 'spool');
  let carryBytes = 0;
  let recipeBytes = 0;
  let recipe!: ReturnType<DeltaPlanner['finish']>['recipe'];
  const tPlan = await best(async () => {
    await rm(spoolDir, { recursive: true, force: true });
    await mkdir(spoolDir);
    const t0 = now();
    const index = new ChunkIndex();
    index.add('base.img', signed.signature);
    const planner = new DeltaPlanner(index, { basePath: 'base.img' });
    // One read of the new file: chunk, plan, and store each chunk to carry as it passes.
    for await (const c of chunkStream(createReadStream(newFile, { highWaterMark: MiB }), signed.signature.params, { withData: true })) {
      if (planner.add(c)) await writeFile(path.join(spoolDir, c.sha256), c.data!);
    }
    const plan = planner.finish(newHash);
    carryBytes = plan.carryBytes;
    recipe = plan.recipe;
    recipeBytes = encodeRecipe(plan.recipe).length;
    return now() - t0;
  });
  const bitfogBytes = carryBytes + recipeBytes + signatureBytes;

  const assembled = path.join(dir, 'assembled.img');
  const sources = {
    readDestRange: (p: string, start: number, end: number | undefined) =>
      createReadStream(path.join(dir, p), { start, ...(end === undefined ? {} : { end: end - 1 }), highWaterMark: MiB }),
    readSpoolChunk: (sha: string) => createReadStream(path.join(spoolDir, sha), { highWaterMark: MiB }),
  };
  // Every timed run writes a new file, as store does (overwriting one costs the kernel
  // more, and differently from run to run).
  const assembleInto = async (options: Parameters<typeof assemble>[3] = {}) => {
    await rm(assembled, { force: true });
    const t0 = now();
    await assemble(recipe, sources, createWriteStream(assembled), options);
    return now() - t0;
  };
  const tAssemble = await best(() => assembleInto());
  const tAssembleWorker = await best(() => assembleInto({ chunkHasher: workerChunkHasher }));
  const tAssembleSeq = await best(() => assembleInto({ rangedReads: false }));
  if ((await sha256File(assembled)) !== newHash) throw new Error('assembled file differs from the changed file');
  // Store's path on a local disk: positional reads of the base and writes of the new file
  // through the local backend (openFile, createFile), into a new file.
  const local = await LocalBackend.open(pathToFileURL(dir).href, dir, { write: true });
  const tAssemblePositional = await best(async () => {
    await rm(assembled, { force: true });
    const t0 = now();
    const file = await local.createFile(toRelPath('assembled.img'), { size: recipe.size });
    await assemblePositional(recipe, { openDestFile: (p) => local.openFile(toRelPath(p)), readSpoolChunk: sources.readSpoolChunk }, file);
    await file.finish();
    return now() - t0;
  });
  await local.close();
  if ((await sha256File(assembled)) !== newHash) throw new Error('assembled file (positional) differs from the changed file');

  console.log(
    `bitfog carries: ${mib(bitfogBytes)} = chunks ${mib(carryBytes)} + recipe ${mib(recipeBytes)} + signature ${mib(signatureBytes)} ` +
      `(${((100 * signatureBytes) / size).toFixed(3)} % of the base); file ${mib(newSize)}`,
  );

  // --- rdiff
  if (have('rdiff')) {
    const sig = path.join(dir, 'base.sig');
    const delta = path.join(dir, 'changed.delta');
    const patched = path.join(dir, 'patched.img');
    const tRdiffSig = await best(() => run('rdiff', ['--force', 'signature', oldFile, sig]));
    const tRdiffDelta = await best(() => run('rdiff', ['--force', 'delta', sig, newFile, delta]));
    const tRdiffPatch = await best(async () => {
      await rm(patched, { force: true });
      return run('rdiff', ['patch', oldFile, delta, patched]);
    });
    const deltaBytes = (await stat(delta)).size;
    console.log(`bytes carried: bitfog ${mib(bitfogBytes)}, rdiff delta ${mib(deltaBytes)}, ratio ${(bitfogBytes / deltaBytes).toFixed(2)} (target ≤ 2)`);
    // Component figures, not the target: bitfog's files flush as they are written (write-behind)
    // and every chunk is hashed, while a bare `rdiff patch` leaves its output in the page cache.
    console.log(`assemble (positional reads and writes: store's path on a local disk): bitfog ${secs(tAssemblePositional)}, rdiff patch ${secs(tRdiffPatch)}, ratio ${(tAssemblePositional / tRdiffPatch).toFixed(2)}`);
    console.log(`assemble as a stream (destinations without positional I/O): bitfog ${secs(tAssemble)}, rdiff patch ${secs(tRdiffPatch)}, ratio ${(tAssemble / tRdiffPatch).toFixed(2)}`);
    console.log(`assemble as a stream, chunk hashes shared with a worker thread: bitfog ${secs(tAssembleWorker)}, rdiff patch ${secs(tRdiffPatch)}, ratio ${(tAssembleWorker / tRdiffPatch).toFixed(2)}`);
    console.log(`assemble as a stream without ranged reads: bitfog ${secs(tAssembleSeq)}, rdiff patch ${secs(tRdiffPatch)}, ratio ${(tAssembleSeq / tRdiffPatch).toFixed(2)}`);
    // rdiff's durable patch: its output goes where bitfog's does, into the destination
    // directory, and is synced.
    const rdiffDurable = async (siteB: string) => {
      const out = path.join(siteB, 'patched by rdiff.img');
      await rm(out, { force: true });
      await timed('sync', []);
      const seconds = await timedSteps([
        ['rdiff', ['patch', oldFile, delta, out]],
        ['sync', [out]],
      ]);
      await rm(out);
      return seconds;
    };
    const real = await compareRealPath(oldFile, newFile, rdiffDurable, realRounds);
    console.log(
      `store of the delta into a local destination (real path, best of ${realRounds} alternating rounds): bitfog ${secs(real.bitfog)}, rdiff patch + sync ${secs(real.rdiff)}, ratio ${(real.bitfog / real.rdiff).toFixed(2)} (target ≤ 1.5)`,
    );
    console.log(
      `signature of the base: bitfog ${secs(tSign)} (${(size / MiB / tSign).toFixed(0)} MB/s), rdiff signature ${secs(tRdiffSig)}, ratio ${(tSign / tRdiffSig).toFixed(2)}`,
    );
    console.log(`delta of the changed file: bitfog ${secs(tPlan)}, rdiff delta ${secs(tRdiffDelta)}, ratio ${(tPlan / tRdiffDelta).toFixed(2)}`);
  } else {
    console.log('bytes carried: rdiff skipped (install the rdiff package)');
  }

  // --- rsync batch
  if (have('rsync')) {
    const destDir = path.join(dir, 'rsync-dest');
    const srcDir = path.join(dir, 'rsync-src');
    await mkdir(destDir);
    await mkdir(srcDir);
    await rm(path.join(destDir, 'f.img'), { force: true });
    run('cp', ['--reflink=auto', oldFile, path.join(destDir, 'f.img')]);
    run('cp', ['--reflink=auto', newFile, path.join(srcDir, 'f.img')]);
    const batch = path.join(dir, 'rsync.batch');
    const tRsync = run('rsync', ['--only-write-batch=' + batch, '--no-whole-file', '-r', '--times', srcDir + '/', destDir + '/']);
    const batchBytes = (await stat(batch)).size;
    console.log(`bytes carried: bitfog ${mib(bitfogBytes)}, rsync --only-write-batch ${mib(batchBytes)}, ratio ${(bitfogBytes / batchBytes).toFixed(2)}`);
    console.log(`delta of the changed file: bitfog ${secs(tPlan)}, rsync --only-write-batch ${secs(tRsync)}, ratio ${(tPlan / tRsync).toFixed(2)}`);
  } else {
    console.log('bytes carried: rsync skipped (install the rsync package)');
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
