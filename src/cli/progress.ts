/**
 * Renders core progress events for a person. On a terminal: one status line redrawn at
 * most ten times a second (bytes, files, rate, ETA; a live count while scanning). Not on a
 * terminal: a plain line every few seconds. Notices, conflicts and skips are printed as
 * lines of their own (the first ones in full, then counted).
 */
import type { Writable } from 'node:stream';
import type { ProgressEvent } from '../core/progress.ts';
import { formatCount, formatDuration, formatSize } from '../core/sizes.ts';

const TTY_INTERVAL_MS = 100;
const PLAIN_INTERVAL_MS = 5000;
const MAX_DETAIL_LINES = 50;

export class ProgressRenderer {
  readonly #out: Writable & { isTTY?: boolean; columns?: number };
  readonly #tty: boolean;
  readonly #quiet: boolean;
  /** The status line, or how to make it: built only when it is drawn (events come per chunk). */
  #status: string | (() => string) = '';
  #lastDraw = 0;
  #drawn = false;
  #details = 0;
  #hiddenDetails = 0;
  // Transfer state for rate and ETA.
  #phase: { name: string; files: number; bytes: number; startedAt: number } | undefined;
  #hashTotal: { files: number; bytes: number } | undefined;

  constructor(out: Writable & { isTTY?: boolean; columns?: number } = process.stderr, options: { quiet?: boolean } = {}) {
    this.#out = out;
    this.#tty = out.isTTY === true;
    this.#quiet = options.quiet === true;
  }

  /** The listener to hand to core operations. */
  readonly listener = (event: ProgressEvent): void => {
    switch (event.type) {
      case 'scan':
        this.#update(() => `scanning ${event.side} ${event.url}: ${formatCount(event.entries)} entries`);
        break;
      case 'scanned':
        this.#hashTotal = { files: event.toHash, bytes: event.toHashBytes };
        this.#update(() => `scanned ${event.side}: ${formatCount(event.entries)} entries; ${event.toHash ? `hashing ${event.toHash} files (${formatSize(event.toHashBytes)})` : 'nothing to hash'}`);
        break;
      case 'hash': {
        const total = this.#hashTotal;
        this.#update(() => `hashing ${event.side}: ${event.files}/${total?.files ?? '?'} files, ${formatSize(event.bytes)}/${formatSize(total?.bytes ?? 0)}`);
        break;
      }
      case 'transfer-start':
        this.#phase = { name: event.phase, files: event.files, bytes: event.bytes, startedAt: Date.now() };
        this.#update(`${event.phase}: ${event.files} files, ${formatSize(event.bytes)} to ${event.phase === 'verify' ? 'check' : 'move'}`, true);
        break;
      case 'transfer': {
        const p = this.#phase;
        const at = Date.now();
        this.#update(() => {
          const elapsed = p ? (at - p.startedAt) / 1000 : 0;
          const rate = elapsed > 0.5 ? event.bytes / elapsed : 0;
          const eta = p && rate > 0 ? (p.bytes - event.bytes) / rate : NaN;
          const pct = p && p.bytes > 0 ? ` ${((100 * event.bytes) / p.bytes).toFixed(1)}%` : '';
          return `${event.phase}: ${event.files}/${p?.files ?? '?'} files, ${formatSize(event.bytes)}/${formatSize(p?.bytes ?? 0)}${pct}` +
            (rate > 0 ? `, ${formatSize(rate)}/s, ETA ${formatDuration(eta)}` : '');
        });
        break;
      }
      case 'notice':
        this.line(`note: ${event.message}`);
        break;
      case 'conflict':
        this.#detail(`conflict: ${quote(event.path)}: ${event.reason}`);
        break;
      case 'skip':
        this.#detail(`skipped: ${quote(event.path)}: ${event.reason}`);
        break;
    }
  };

  /** Prints a line of its own, keeping the status line below it on a terminal. */
  line(text: string): void {
    this.#clear();
    this.#out.write(`${text}\n`);
    this.#redraw();
  }

  /** Ends the status line (call before printing the summary). */
  finish(): void {
    this.#clear();
    if (this.#hiddenDetails > 0) {
      this.#out.write(`… and ${this.#hiddenDetails} more skipped or conflicting entries (see "bitfog status")\n`);
    }
    this.#status = '';
  }

  #detail(text: string): void {
    if (this.#details < MAX_DETAIL_LINES) {
      this.#details++;
      this.line(text);
    } else this.#hiddenDetails++;
  }

  #update(status: string | (() => string), force = false): void {
    this.#status = status;
    if (this.#quiet) return;
    const now = Date.now();
    const interval = this.#tty ? TTY_INTERVAL_MS : PLAIN_INTERVAL_MS;
    if (!force && now - this.#lastDraw < interval) return;
    this.#lastDraw = now;
    if (this.#tty) this.#redraw();
    else this.#out.write(`${this.#statusText()}\n`);
  }

  #statusText(): string {
    if (typeof this.#status === 'function') this.#status = this.#status();
    return this.#status;
  }

  #redraw(): void {
    if (!this.#tty || this.#quiet) return;
    const status = this.#statusText();
    if (!status) return;
    const width = Math.max(20, (this.#out.columns || 100) - 1);
    const text = status.length > width ? `${status.slice(0, width - 1)}…` : status;
    this.#out.write(`\r\x1b[K${text}`);
    this.#drawn = true;
  }

  #clear(): void {
    if (this.#tty && this.#drawn) {
      this.#out.write('\r\x1b[K');
      this.#drawn = false;
    }
  }
}

/** A path made safe for one terminal line (newlines and control characters escaped). */
export function quote(path: string): string {
  return /[\x00-\x1f\x7f"\\]/.test(path) || path.trim() !== path ? JSON.stringify(path) : path;
}
