/**
 * Shared bench helpers: run commands and time them, print result lines as
 * `<what>: bitfog <s>s, <tool> <s>s, ratio <x> (target ≤ <t>)`.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';

export const BITFOG = path.resolve(import.meta.dirname, '..', 'bin', 'bitfog.mjs');

/** Runs a command, failing on a non-zero exit; resolves with wall-clock seconds. */
export function timed(cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; allowCodes?: number[] } = {}): Promise<number> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env }, cwd: options.cwd });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0 && !(options.allowCodes ?? []).includes(code ?? -1)) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`));
      else resolve(Number(process.hrtime.bigint() - t0) / 1e9);
    });
  });
}

/** Times several steps in sequence; total seconds. */
export async function timedSteps(steps: Array<[string, string[]]>, env?: NodeJS.ProcessEnv): Promise<number> {
  let total = 0;
  for (const [cmd, args] of steps) total += await timed(cmd, args, env ? { env } : {});
  return total;
}

export function bitfogArgs(...args: string[]): [string, string[]] {
  return [process.execPath, [BITFOG, ...args]];
}

export function report(what: string, bitfogSeconds: number, tool: string, toolSeconds: number, target: string): void {
  const ratio = bitfogSeconds / toolSeconds;
  console.log(`${what}: bitfog ${bitfogSeconds.toFixed(2)}s, ${tool} ${toolSeconds.toFixed(2)}s, ratio ${ratio.toFixed(2)} (target ${target})`);
}

export function hasCommand(cmd: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = spawn('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    c.on('close', (code) => resolve(code === 0));
  });
}
