/**
 * Progress events: how long-running core operations tell their caller what is happening.
 * The core emits them as they occur; the CLI (or the server) decides how often and how to
 * show them. Counters are cumulative for the current phase.
 */
export type Side = 'source' | 'destination' | 'spool';

export type ProgressEvent =
  /** Listing a tree: entries seen so far. */
  | { type: 'scan'; side: Side; url: string; entries: number }
  /** Listing finished; `toHash` files (`toHashBytes` bytes) must be read to learn their hash. */
  | { type: 'scanned'; side: Side; url: string; entries: number; toHash: number; toHashBytes: number }
  /** Hashing: cumulative files and bytes hashed. */
  | { type: 'hash'; side: Side; files: number; bytes: number }
  /** A transfer phase begins with these totals. */
  | { type: 'transfer-start'; phase: 'fetch' | 'store' | 'verify'; files: number; bytes: number }
  /** Transfer progress: cumulative files finished and bytes moved. */
  | { type: 'transfer'; phase: 'fetch' | 'store' | 'verify'; files: number; bytes: number; current?: string }
  /** Something a person should know (assumptions made, things left for later). */
  | { type: 'notice'; message: string }
  /** An entry left alone at the destination because the plan could not prove a change safe. */
  | { type: 'conflict'; path: string; reason: string }
  /** An entry not carried or not written, with why. */
  | { type: 'skip'; path: string; reason: string };

export type ProgressListener = (event: ProgressEvent) => void;
