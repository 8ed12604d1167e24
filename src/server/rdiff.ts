/**
 * librsync's `rdiff` (Debian package `rdiff`), run as a child process on temporary files,
 * for the classic `?rdiff=sig|delta|patch` requests. Outputs go to a file first so that
 * a failure becomes an error status instead of a truncated 200 (the original's weakness).
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { bitfogError } from '../core/errors.ts';

/**
 * Runs `rdiff ...args`, feeding `stdin` when given. Resolves on exit 0; throws EIO with
 * the first line of rdiff's stderr otherwise, EOPNOTSUPP when rdiff is not installed.
 */
export function runRdiff(command: string, args: string[], stdin?: Readable, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [stdin ? 'pipe' : 'ignore', 'ignore', 'pipe'], ...(signal ? { signal } : {}) });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    if (stdin) {
      stdin.on('error', (e) => child.kill('SIGKILL') && reject(e));
      child.stdin!.on('error', () => {
        /* rdiff exited early; its exit status says why */
      });
      stdin.pipe(child.stdin!);
    }
    child.on('error', (e) => {
      stdin?.destroy();
      const code = (e as NodeJS.ErrnoException).code;
      reject(code === 'ENOENT' ? bitfogError('EOPNOTSUPP', 'rdiff is not installed on the server', { cause: e }) : e);
    });
    child.on('close', (code) => {
      stdin?.destroy();
      if (code === 0) resolve();
      else reject(bitfogError('EIO', `rdiff ${args[0]} failed: ${stderr.split('\n')[0] ?? ''}`.trim()));
    });
  });
}
