/**
 * Runs a TypeScript ES module snippet in a child Node process (tsx, `--input-type=module`),
 * for tests of what only a whole process shows: that it exits by itself. The child is
 * killed after `limitMs`; `signal` then says so.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
}

export async function runModuleInChild(source: string, limitMs: number): Promise<ChildResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', source], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(killer);
  return { code, signal, stdout };
}
