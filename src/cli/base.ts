/**
 * What every bitfog command shares: global options, the backend registry, progress
 * rendering, Ctrl-C handling, and the one place where errors become messages and exit codes.
 */
import { Command, Option, UsageError } from 'clipanion';
import { isBitfogError, toBitfogError } from '../core/errors.ts';
import { HashCache } from '../core/hashcache.ts';
import type { BackendRegistry } from '../core/registry.ts';
import { ExitCode, exitCodeFor } from './exit-codes.ts';
import { ProgressRenderer } from './progress.ts';
import { createRegistry } from './registry.ts';

export abstract class BitfogCommand extends Command {
  verbose = Option.Boolean('--verbose,-v', false, { description: 'Show stack traces and causes of errors (also BITFOG_DEBUG=1)' });
  quiet = Option.Boolean('--quiet,-q', false, { description: 'No progress output; only the summary and errors' });
  cacheDir = Option.String('--cache-dir', { description: 'Where hash caches live (default: $BITFOG_CACHE_DIR, else $XDG_CACHE_HOME/bitfog, else ~/.cache/bitfog)' });
  noCache = Option.Boolean('--no-cache', false, { description: 'Re-hash everything; do not read or write the hash cache' });
  plugins = Option.Array('--plugin', [], { description: 'Load a backend plugin (package name or path); repeatable. See `bitfog backends`' });
  config = Option.String('--config', { description: 'Config file listing plugins (default: $BITFOG_CONFIG, else ./bitfog.config.json, else $XDG_CONFIG_HOME/bitfog/config.json)' });

  /** The command's work. Throws coded errors; returns an exit code. */
  protected abstract run(signal: AbortSignal): Promise<number>;

  #registry: BackendRegistry | undefined;

  /** The scheme registry with every built-in backend (and configured plugins). */
  protected async registry(): Promise<BackendRegistry> {
    this.#registry ??= await createRegistry({ plugins: this.plugins, configPath: this.config, env: this.context.env });
    return this.#registry;
  }

  protected async hashCache(url: string): Promise<HashCache> {
    if (this.noCache) return HashCache.memory();
    return HashCache.open(url, this.cacheDir ?? undefined);
  }

  protected progress(): ProgressRenderer {
    return new ProgressRenderer(this.context.stderr as NodeJS.WriteStream, { quiet: this.quiet });
  }

  protected out(line = ''): void {
    this.context.stdout.write(`${line}\n`);
  }

  async execute(): Promise<number> {
    const controller = new AbortController();
    let interrupts = 0;
    const onSignal = () => {
      interrupts++;
      if (interrupts > 1) process.exit(ExitCode.INTERRUPTED);
      this.context.stderr.write('\nbitfog: interrupted; stopping, keeping what is done (press Ctrl-C again to stop at once)\n');
      controller.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      return await this.run(controller.signal);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      return this.report(e, controller.signal.aborted);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }

  /** Prints one clear line for an error (more with --verbose) and returns its exit code. */
  protected report(e: unknown, interrupted = false): number {
    const err = toBitfogError(e);
    const debug = this.verbose || process.env.BITFOG_DEBUG === '1';
    const stderr = this.context.stderr;
    // After an interrupt, whatever failed failed because of it (a connection it closed, say):
    // what the user needs to know is how to go on, not that error.
    if (err.code === 'EABORTED' || interrupted) {
      stderr.write('bitfog: interrupted; run the same command again to resume\n');
      if (debug && err.code !== 'EABORTED') stderr.write(`bitfog: (the step under way ended with: ${err.message} [${err.code}])\n`);
      return ExitCode.INTERRUPTED;
    }
    stderr.write(`bitfog: ${err.message}${debug ? ` [${err.code}]` : ''}\n`);
    if (debug) {
      stderr.write(`${err.stack ?? ''}\n`);
      let cause = err.cause;
      while (cause) {
        stderr.write(`caused by: ${cause instanceof Error ? cause.stack ?? cause.message : String(cause)}\n`);
        cause = cause instanceof Error ? cause.cause : undefined;
      }
    }
    const code = exitCodeFor(err.code);
    if (code === ExitCode.USAGE && isBitfogError(e)) {
      stderr.write(this.cli.usage(this, { detailed: false }));
    }
    return code;
  }
}
