/**
 * Human sizes: parsing what users type (`500G`, `1.5T`, `200MiB`, `4096`) and formatting.
 *
 * Single letters and IEC suffixes are binary (K = KiB = 1024, as `df -h` and `ls -h`
 * mean them); two-letter SI suffixes are decimal (KB = 1000, GB = 10^9), as disk vendors
 * mean them. Case does not matter; a trailing `B` alone means bytes.
 */
import { bitfogError } from './errors.ts';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10, kib: 2 ** 10, kb: 1e3,
  m: 2 ** 20, mib: 2 ** 20, mb: 1e6,
  g: 2 ** 30, gib: 2 ** 30, gb: 1e9,
  t: 2 ** 40, tib: 2 ** 40, tb: 1e12,
  p: 2 ** 50, pib: 2 ** 50, pb: 1e15,
};

/** Parses a size; throws EUSAGE with the accepted forms when it is not one. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw bitfogError('EUSAGE', `invalid size ${JSON.stringify(text)} (examples: 500G, 1.5T, 200MiB, 750GB, 4096)`);
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw bitfogError('EUSAGE', `size ${JSON.stringify(text)} is too large`);
  return bytes;
}

/** Formats bytes with binary units and three significant digits: `1.50 GiB`, `512 B`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${bytes} B`;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/**
 * Formats a count with commas between groups of three digits: `1,234,567`. The same as
 * `toLocaleString('en-US')` for integers, without it: its first call loads the locale data,
 * about 20 ms of every command's start.
 */
export function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** Formats a duration in seconds as `1h02m`, `3m05s`, `4.2s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m${String(r).padStart(2, '0')}s`;
  return `${r}s`;
}
