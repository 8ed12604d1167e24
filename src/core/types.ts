/**
 * The backend contract: what every storage backend (built-in or plugin) implements.
 *
 * A backend is opened from a URL and is a `Source` (read side) and, when writable, a
 * `Destination`. The required surface is small; what a backend can do beyond it is
 * declared once in `capabilities`, and the core checks those flags and supplies the
 * fallbacks (for example: no atomic rename but atomic writes → write in place; no ranged
 * reads → read from the start and skip). Backends never see an unvalidated path: every
 * `RelPath` has passed `toRelPath`.
 *
 * Errors: every method throws `BitfogError` with a stable code (see errors.ts); the codes
 * each method may throw are listed on it. Any method may also throw EABORTED (its signal
 * fired), ETRANSIENT (worth retrying), EUNREACHABLE, EAUTH and EIO.
 */
import type { Readable } from 'node:stream';
import type { RelPath } from './paths.ts';

export type EntryKind = 'file' | 'symlink' | 'directory';

/** One entry of a tree, as a backend lists it and as a snapshot records it. */
export interface Entry {
  path: RelPath;
  kind: EntryKind;
  /** File: bytes. Symlink: byte length of the target (UTF-8). Directory: 0. */
  size: number;
  /** Permission bits (`0o7777` range) when the backend keeps them. */
  mode?: number;
  /** Modification time in milliseconds since the epoch (may be fractional). */
  mtimeMs?: number;
  /**
   * Content hash with its algorithm name, `sha256:<64 hex>`. Backends set it only when
   * they know it without reading the content (`capabilities.serverSideHashes`); the core
   * fills it in for snapshots.
   */
  hash?: string;
  /** Symlinks only: the target, verbatim. */
  linkTarget?: string;
  /**
   * An opaque token that changes whenever the content may have changed (local disk:
   * size, mtime, ctime and inode; S3: ETag; WebDAV: ETag). The hash cache reuses a
   * cached hash only while the token is unchanged. Omit it when there is none: the
   * content is then re-read for every snapshot.
   */
  version?: string;
  /**
   * The time (ms since epoch) of the last change to the entry as the backend saw it
   * (local: max of mtime and ctime). A cached hash recorded within the racy window of
   * this time is not trusted, since a later change in the same clock tick would leave
   * `version` unchanged.
   */
  changedAtMs?: number;
}

/** What a backend can do beyond the required surface. The core checks these flags. */
export interface Capabilities {
  /** `rename` replaces its target atomically: the core writes to a temporary name and renames. */
  atomicRename: boolean;
  /** `write` is all-or-nothing by itself (an S3 PUT): no temporary name is needed. */
  atomicWrite: boolean;
  /** Symlinks can be listed, read and created. Without it, symlinks are reported, not stored. */
  symlinks: boolean;
  /** `read` honours `start`/`end` without reading from the beginning. */
  rangedReads: boolean;
  /** `list` yields `hash` (sha256) for files without the content being read. */
  serverSideHashes: boolean;
  /**
   * Granularity of stored modification times in milliseconds: 0.000001 for nanoseconds,
   * 1000 for whole seconds, 0 when mtimes are not kept at all.
   */
  mtimePrecisionMs: number;
  /** `setMetadata` keeps permission bits. */
  modes: boolean;
  /** `A` and `a` are different names. */
  caseSensitive: boolean;
  /** Empty directories exist on their own (not only as prefixes of files). */
  emptyDirectories: boolean;
  /** How many transfers the backend handles well at once (the core never exceeds it). */
  maxConcurrency: number;
}

export interface SignalOption {
  signal?: AbortSignal;
}

export interface ReadSmallFileOptions extends SignalOption {
  /**
   * Memory the caller lends for the content, used when it is long enough (the file's size
   * plus one byte): the result is then a view of it, valid until the caller reuses it.
   * Reading into memory already in use saves the kernel faulting in and zeroing fresh
   * pages for every file, which can cost more than the read. Optional to honour: a backend
   * may return a buffer of its own.
   */
  into?: Buffer;
}

export interface ReadOptions extends SignalOption {
  /** First byte to read (default 0). */
  start?: number;
  /** One past the last byte to read (default: the end of the file). */
  end?: number;
}

export interface WriteOptions extends SignalOption {
  /** The exact number of bytes `content` will yield; backends may rely on it (Content-Length). */
  size: number;
  /** `sha256:<hex>` of the content, for backends that store or check it (object metadata, headers). */
  hash?: string;
  /**
   * true when `content` checks itself against `size` and `hash`: it fails with EINTEGRITY
   * instead of ending when they do not match (the core's store always does this). A backend
   * that commits only once the stream has ended (an object PUT, a multipart upload) then
   * need not hash the content again to guard the commit.
   */
  contentVerified?: boolean;
  /**
   * Permission bits and mtime to store with the file where the backend keeps them. A
   * backend applies them as part of the write (the core does not call setMetadata after),
   * and they survive a later `rename`.
   */
  mode?: number;
  mtimeMs?: number;
}

/** Options of `Destination.sendLocalFile`. */
export interface SendLocalFileOptions extends WriteOptions {
  /** The `sha256:<hex>` the bytes must hash to: required here. */
  hash: string;
  /**
   * Called with the file's bytes in order as they are read (the core counts progress and
   * signs large files from them). The bytes are copied or used before it returns or its
   * promise resolves, so the caller may reuse its buffer then; a returned promise means
   * "wait before reading more".
   */
  onBytes?(bytes: Uint8Array): void | Promise<void>;
}

export interface Metadata {
  mode?: number;
  mtimeMs?: number;
}

/** The read side of a backend. */
export interface Source {
  /** The URL this backend was opened from, without credentials, for messages. */
  readonly url: string;
  readonly capabilities: Capabilities;
  /**
   * Optional: the directory on this machine the backend's tree is (local disks), resolved.
   * fetch and store then refuse a spool inside that tree, or the tree inside the spool.
   */
  readonly localRoot?: string;

  /**
   * Every entry below the root, recursively, directories included, the root excluded.
   * Order is unspecified. Symlinks are listed, never followed. Entries that are neither
   * file, symlink nor directory (FIFOs, sockets, devices) are not yielded; backends
   * report them through `onSkip`. Streams: a backend never holds the whole listing.
   * Throws ENOENT when the root itself does not exist.
   */
  list(options?: ListOptions): AsyncIterable<Entry>;

  /** lstat semantics: a symlink is described, not followed. Throws ENOENT. */
  stat(path: RelPath, options?: SignalOption): Promise<Entry>;

  /**
   * The content of a file as a stream of bytes, `start` to `end` (exclusive) when given.
   * Without `capabilities.rangedReads` a backend may ignore the range only if it throws
   * EOPNOTSUPP instead; the core then reads from the start and skips.
   * Throws ENOENT, EISDIR.
   */
  read(path: RelPath, options?: ReadOptions): Promise<Readable>;

  /** The target of a symlink, verbatim. Throws ENOENT, and EINVAL-like EIO for non-links. */
  readlink(path: RelPath, options?: SignalOption): Promise<string>;

  /**
   * Optional. Copies the whole file at `path` into `localFile`, a path on this machine that
   * does not exist yet (the backend creates it), by the fastest means the backend has (the
   * local backend: an in-kernel copy). The core then hashes `localFile` itself, so what is
   * verified is what landed. Throws as `read` does, and EOPNOTSUPP to make the core stream
   * through `read` instead.
   */
  copyToLocalFile?(path: RelPath, localFile: string, options?: SignalOption): Promise<void>;

  /**
   * Optional. The file at `path` opened for positional reads into buffers the caller owns
   * and reuses. Large files then move without fresh memory for every chunk, which costs
   * more than the copy itself (the kernel faults in and zeroes every new page): `bitfog
   * serve` sends files of 1 MiB and more this way. Throws as `read` does
   * (ENOENT, EISDIR, EOPNOTSUPP for what is not a regular file); EOPNOTSUPP also makes the
   * caller use `read` instead.
   */
  openFile?(path: RelPath, options?: SignalOption): Promise<OpenFile>;

  /**
   * Optional. The whole content of the file at `path`, handed in order to `onPiece` in
   * memory the backend reuses: for remote backends whose transport can read into its own
   * buffers (the bitfog-HTTP backend reads sockets into blocks it keeps), where a stream
   * would need new memory for every chunk. `onPiece` takes what it needs of a piece before
   * it returns and is done with its memory once its promise resolves; until then the
   * backend must not change that memory. A backend may hand the next piece (in other
   * memory) before an earlier promise resolved, and bounds how many it has out. A rejected
   * promise ends the read with that error. Resolves with the number of bytes handed once
   * every piece's promise resolved. Pieces are never handed twice: a backend that resumes
   * an interrupted transfer goes on after the last byte it handed. Throws as `read` does,
   * and EOPNOTSUPP (before handing anything) to make the core use `read` instead.
   */
  readPieces?(path: RelPath, onPiece: (piece: Uint8Array) => Promise<void>, options?: SignalOption): Promise<number>;

  /**
   * Optional. The whole content of a file of at most `maxBytes`, in one buffer; undefined
   * when the file is larger or cannot be read this way here (the caller then streams it
   * through `read`). For the many small files of a tree, where a stream's machinery costs
   * more than the bytes (the local backend makes its few system calls directly). Throws as
   * `read` does.
   */
  readSmallFile?(path: RelPath, maxBytes: number, options?: ReadSmallFileOptions): Promise<Buffer | undefined>;

  /**
   * Optional. A fingerprint of the listing `list` would yield now, taken without yielding
   * it, so much more cheaply (the local backend: on worker threads). The same fingerprint
   * must mean the same listing: every entry's path and every field `list` gives it (as far
   * as SHA-256 tells); a listing that merely looks different (another order) may get
   * another one. Undefined when the listing would skip anything (a backend may also give up
   * on what it cannot fingerprint). A backend that has it also calls
   * `ListOptions.onFingerprint` after a listing. `builddb` uses it to see that a tree is
   * unchanged since the snapshot file it made of it; a hash that `list` supplies itself is
   * not trusted that way.
   */
  listingFingerprint?(options?: FingerprintOptions): Promise<string | undefined>;

  /** Releases connections. Idempotent. */
  close(): Promise<void>;
}

/** A file opened by `Source.openFile`. */
export interface OpenFile {
  /** Its size when it was opened. */
  readonly size: number;
  /** Reads up to `length` bytes at `position` into `buffer` from `offset`; the number read, 0 at the end of the file. */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /**
   * Optional: a descriptor of this process for the open file, valid until `close`, which the
   * core may read with positional reads on a worker thread (local files: a large file's
   * read-back is then hashed and signed without passing through the calling thread).
   */
  readonly fd?: number;
  /** Idempotent. */
  close(): Promise<void>;
}

/** A file made by `Destination.createFile`. */
export interface WritableFile {
  /** Writes all of `buffer[offset, offset + length)` at `position`; the buffer may be reused once this resolves. */
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<void>;
  /**
   * Completes the file: sets the mode and mtime given at creation and closes it. Throws
   * EINTEGRITY when it does not hold exactly `size` bytes. Call once, after every write resolved.
   */
  finish(): Promise<void>;
  /** Closes the file without completing it (after a failure; the caller removes it). Idempotent. */
  discard(): Promise<void>;
}

export interface ListOptions extends SignalOption {
  /** Called for each entry that is skipped (special files, unreadable directories), with why. */
  onSkip?: (path: string, reason: string) => void;
  /**
   * For a backend with `listingFingerprint`: called once, after the last entry, with the
   * fingerprint of what was listed (what `listingFingerprint` returns for the same tree),
   * or undefined when the listing skipped anything.
   */
  onFingerprint?: (fingerprint: string | undefined) => void;
}

export interface FingerprintOptions extends SignalOption {
  /** Called now and then with how many entries have been looked at so far. */
  onListed?: (entries: number) => void;
}

/** The write side of a backend. */
export interface Destination extends Source {
  /**
   * Writes a whole file at `path` from `content`, replacing any file there. Parents exist
   * (the core creates them). Unless `capabilities.atomicWrite`, the result may be partial
   * if interrupted: the core only ever calls this on a temporary name and renames after.
   * Throws ENOSPC, EACCES, EROFS, EISDIR, EINTEGRITY (byte count differs from `size`).
   */
  write(path: RelPath, content: Readable, options: WriteOptions): Promise<void>;

  /**
   * Optional. `write` for a small file whose content is in memory (already verified by
   * the caller); false when it cannot be written this way here (the caller then uses
   * `write`). For the many small files of a tree (the local backend makes its few system
   * calls directly). Same semantics and errors as `write`.
   */
  writeSmallFile?(path: RelPath, content: Uint8Array, options: WriteOptions): Promise<boolean>;

  /**
   * Optional. Creates (or truncates) the file at `path` for positional writes from buffers
   * the caller owns and reuses once each write resolves: nothing allocated per piece. The
   * core uses it, with `openFile`, only with `capabilities.atomicRename` and on a temporary
   * name, to rebuild a file from a delta where its pieces fall. Same confinement, errors
   * and metadata as `write`.
   */
  createFile?(path: RelPath, options: WriteOptions): Promise<WritableFile>;

  /** Creates one directory; its parent exists. Succeeds if it already is a directory. Throws EEXIST if a non-directory is there. */
  mkdir(path: RelPath, options?: SignalOption): Promise<void>;

  /** Removes a file or symlink. Throws ENOENT, EISDIR. */
  remove(path: RelPath, options?: SignalOption): Promise<void>;

  /** Removes an empty directory. Throws ENOENT, ENOTEMPTY. */
  rmdir(path: RelPath, options?: SignalOption): Promise<void>;

  /** Creates a symlink `path` → `target`. Throws EEXIST, EOPNOTSUPP without `capabilities.symlinks`. */
  symlink(path: RelPath, target: string, options?: SignalOption): Promise<void>;

  /**
   * Renames `from` onto `to`, replacing a file or symlink at `to` atomically when
   * `capabilities.atomicRename`. Throws ENOENT, EOPNOTSUPP.
   */
  rename(from: RelPath, to: RelPath, options?: SignalOption): Promise<void>;

  /** Sets mode and/or mtime where the backend keeps them; silently ignores what it cannot keep. */
  setMetadata(path: RelPath, metadata: Metadata, options?: SignalOption): Promise<void>;

  /**
   * Optional. Writes the file at `path` from the local file `localFile` (a spool blob) with
   * the contract of `write`. The core uses it only with `capabilities.atomicRename`, on a
   * temporary name, and reads the written file back (`openFile`, else `read`) to verify it before
   * renaming it into place: implement it only where that read is cheap (a local disk).
   * Throws EOPNOTSUPP to make the core stream through `write` instead.
   */
  writeFromLocalFile?(path: RelPath, localFile: string, options: WriteOptions): Promise<void>;

  /**
   * Optional. Writes the file at `path` from the local file `localFile` (a spool blob),
   * reading it itself, and checking every byte it reads: it commits the file only when
   * they are exactly `options.size` bytes hashing to `options.hash`. Otherwise it throws
   * EINTEGRITY (meaning: the local file's bytes were not what was declared; a refusal by
   * the storage itself is another code) and commits nothing: no new file at `path`, and
   * a file already there stays as it was. Because of that check the core does not read
   * the file back, so this is the way for a remote backend to take a spool blob without a
   * stream: straight from the file into its own (reused) buffers. The core calls it on a
   * temporary name with `capabilities.atomicRename`, or on the final name with
   * `capabilities.atomicWrite`. `options.onBytes` must see every byte exactly once, in
   * order, even when the backend retries a part internally. Throws EOPNOTSUPP, before
   * reading anything, to make the core stream through `write` instead.
   */
  sendLocalFile?(path: RelPath, localFile: string, options: SendLocalFileOptions): Promise<void>;

  /**
   * Optional. Makes the content and names at `paths` durable (fsync or equivalent), in one
   * batch. The core calls it on temporary files before renaming them into place and on
   * directories after renames. Backends whose writes are durable when they return omit it.
   */
  sync?(paths: RelPath[], options?: SignalOption): Promise<void>;

  /** Optional. Free bytes available to this destination, when the backend can tell. */
  freeSpace?(): Promise<number | undefined>;

  /**
   * Optional. Undoes what opening for writing created: the root directory, and any parents
   * the open made for it, as far as they are still empty (innermost first, each removed
   * only when empty, so nothing written is ever removed). Called before `close` when a
   * command fails or refuses the destination: a mistyped URL leaves nothing behind. Never
   * throws.
   */
  discardCreatedRoot?(): Promise<void>;
}

export function isDestination(backend: Source): backend is Destination {
  return typeof (backend as Partial<Destination>).write === 'function';
}

export interface OpenOptions extends SignalOption {
  /** Open for writing: the result must be a Destination, or the open fails with EROFS. */
  write: boolean;
  /** Environment to read credentials and options from (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
}

/**
 * A scheme provider: how the registry opens URLs of the schemes it claims. Providers
 * are light; `open` imports the implementation (and its SDK) only when called.
 */
export interface BackendProvider {
  /** URL schemes without the colon, lowercase: `['s3']`, `['webdav', 'webdavs']`. */
  schemes: string[];
  /** One line for `bitfog backends`. */
  description: string;
  /** Capabilities of what `open` returns, for `bitfog backends` without connecting. */
  capabilities: Capabilities;
  /** Opens `url`. Throws EBADURL for a malformed URL, EROFS when `write` cannot be had. */
  open(url: string, options: OpenOptions): Promise<Source | Destination>;
}
