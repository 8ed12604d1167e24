/**
 * `npm test`: starts the real services the backend tests need, runs every test file
 * with node:test, stops the services, and exits non-zero if anything failed.
 *
 * Services: each `test/services/<name>.sh` is called as `<script> start <statedir>` and
 * must write `<statedir>/<name>.env` (lines `KEY=VALUE`) describing how to reach it, and
 * `<script> stop <statedir>` must stop exactly what it started. With CI=true a service
 * that fails to start fails the run; elsewhere its tests skip with a message.
 *
 * Usage: npm test [-- test/some.test.ts ...]   (BITFOG_SERVICES=sftp,webdav to pick services)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const servicesDir = path.join(root, 'test', 'services');
const stateDir = process.env.BITFOG_TEST_STATE ?? path.join(tmpdir(), `bitfog-test-services-${process.pid}`);
const inCI = process.env.CI === 'true';

/** The test process, while it runs: ended first when this runner is told to stop. */
let testChild: ChildProcess | undefined;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, own = false): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: 'inherit', env, cwd: root });
    if (own) testChild = child;
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    child.on('error', () => resolve(127));
  });
}

function parseEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^'(.*)'$/, '$1').replace(/^"(.*)"$/, '$1');
  }
  return out;
}

function testFiles(): string[] {
  const explicit = process.argv.slice(2);
  if (explicit.length) return explicit;
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && e.name !== 'helpers' && e.name !== 'services' && e.name !== 'fixtures') walk(p);
      else if (e.isFile() && e.name.endsWith('.test.ts')) out.push(path.relative(root, p));
    }
  };
  walk(path.join(root, 'test'));
  return out.sort();
}

const wanted = process.env.BITFOG_SERVICES?.split(',').filter(Boolean);
const services = existsSync(servicesDir)
  ? readdirSync(servicesDir)
      .filter((f) => f.endsWith('.sh') && f !== 'install-packages.sh')
      .map((f) => f.slice(0, -3))
      .filter((name) => !wanted || wanted.includes(name))
  : [];

mkdirSync(stateDir, { recursive: true });
// Hash caches of commands a test runs without its own go with the run's state, not into
// the home directory of whoever runs the tests.
const env: NodeJS.ProcessEnv = { BITFOG_CACHE_DIR: path.join(stateDir, 'hash-cache'), ...process.env, BITFOG_TEST_STATE: stateDir, FORCE_COLOR: '0' };
const failedServices: string[] = [];
const started: string[] = [];

async function startService(name: string): Promise<void> {
  const t0 = Date.now();
  const code = await run('bash', [path.join(servicesDir, `${name}.sh`), 'start', stateDir]);
  const envFile = path.join(stateDir, `${name}.env`);
  started.push(name);
  if (code !== 0 || !existsSync(envFile)) {
    failedServices.push(name);
    console.error(`[test] service ${name} failed to start (exit ${code})${inCI ? '' : '; its tests will skip'}`);
    return;
  }
  Object.assign(env, parseEnvFile(envFile));
  console.error(`[test] service ${name} ready in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

/** The services' state directory goes with them (unless the caller chose it, to look at). */
function removeState(): void {
  if (!process.env.BITFOG_TEST_STATE) rmSync(stateDir, { recursive: true, force: true });
}

async function stopAll(): Promise<void> {
  await Promise.all(started.map((name) => run('bash', [path.join(servicesDir, `${name}.sh`), 'stop', stateDir])));
}

let exitCode = 0;
// Ctrl-C, `timeout`, a closed terminal or a CI job cancelled: the services started here
// must not outlive the run (left running, they hold ports and slow the machine down).
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
  process.on(signal, () => {
    testChild?.kill('SIGTERM');
    void stopAll().then(() => {
      removeState();
      process.exit(code);
    });
  });
}
try {
  await Promise.all(services.map(startService));
  const files = testFiles();
  const concurrency = process.env.BITFOG_TEST_CONCURRENCY ?? '2';
  exitCode = await run(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, ...files], env, true);
} finally {
  await stopAll();
  removeState();
}
if (failedServices.length && inCI) {
  console.error(`[test] services that failed to start: ${failedServices.join(', ')}`);
  exitCode ||= 1;
}
process.exit(exitCode);
