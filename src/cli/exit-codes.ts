/**
 * Exit codes of every bitfog command, and how error codes map onto them (in one place).
 */
import type { ErrorCode } from '../core/errors.ts';

export const ExitCode = {
  OK: 0,
  /** Something failed; stderr says what. */
  ERROR: 1,
  /** The command line was wrong (unknown option, bad size, bad URL); usage is printed. */
  USAGE: 2,
  /** Finished, but conflicts were left alone at the destination (see `bitfog status`). */
  CONFLICTS: 3,
  /** Corrupt content was found on the spool (verify, or store skipping corrupt blobs). */
  CORRUPT: 4,
  /** The spool is in use by another process. */
  LOCKED: 5,
  /** Interrupted (Ctrl-C / SIGTERM); rerun the same command to resume. */
  INTERRUPTED: 130,
} as const;

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'EUSAGE':
    case 'EBADURL':
    case 'EBADPATH':
      return ExitCode.USAGE;
    case 'ELOCKED':
      return ExitCode.LOCKED;
    case 'EABORTED':
      return ExitCode.INTERRUPTED;
    case 'EINTEGRITY':
      return ExitCode.CORRUPT;
    default:
      return ExitCode.ERROR;
  }
}
