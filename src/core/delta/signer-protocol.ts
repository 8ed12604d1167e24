/** Flow control shared by `signer.ts` and its worker (`sign-worker.ts`). */

/** The worker acknowledges this many bytes at a time… */
export const ACK_EVERY = 4 * 1024 * 1024;
/** …and the writer waits while more than this many are unacknowledged. */
export const MAX_QUEUED = 16 * 1024 * 1024;
/** A worker reading a file itself (`readFile`) reads this many bytes at a time… */
export const READ_BYTES = 1024 * 1024;
/** …and reports its progress every this many bytes. */
export const PROGRESS_EVERY = 8 * 1024 * 1024;
