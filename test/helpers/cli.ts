/** Runs the bitfog CLI as a user would: a child process, its exit code, stdout and stderr. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..', '..');
export const BITFOG_BIN = path.join(root, 'bin', 'bitfog.mjs');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Run as a user whom file permissions bind: as root, through util-linux's setpriv without
   * the capabilities that let root read and write past them (so chmod 000 means unreadable).
   */
  permissionsBind?: boolean;
}

const ROOT_OVERRIDES = '-dac_override,-dac_read_search';

/** Starts `bitfog args…`; the returned child can be killed mid-way. */
export function startBitfog(args: string[], options: CliOptions = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const command = [process.execPath, BITFOG_BIN, ...args];
  if (options.permissionsBind && process.getuid?.() === 0) command.unshift('setpriv', `--inh-caps=${ROOT_OVERRIDES}`, `--bounding-set=${ROOT_OVERRIDES}`);
  const child = spawn(command[0]!, command.slice(1), {
    cwd: options.cwd ?? root,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

export async function bitfog(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return startBitfog(args, options).done;
}

/** Runs bitfog and fails with its output when the exit code is not `expected`. */
export async function bitfogOk(args: string[], options: CliOptions = {}, expected = 0): Promise<CliResult> {
  const r = await bitfog(args, options);
  if (r.code !== expected) {
    throw new Error(`bitfog ${args.join(' ')} exited ${r.code} (expected ${expected})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  return r;
}
