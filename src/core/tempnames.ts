/**
 * Names of bitfog's temporary files at a destination. A file is written under such a
 * name in its final directory and renamed into place only when complete and verified;
 * after a crash, leftovers are recognised by this pattern, ignored by snapshots and
 * removed by the next store. The random part makes a collision with a user's file
 * practically impossible.
 */
import { randomBytes } from 'node:crypto';
import { baseName, childPath, parentPath, type RelPath } from './paths.ts';

const PREFIX = '.bitfog-tmp-';
/** Exactly what tempSiblingOf makes: the prefix, 16 hex digits, a dash (then a hint). */
const PATTERN = /^\.bitfog-tmp-[0-9a-f]{16}-/;

/**
 * The 16 hex digits of a temporary name: 10 drawn at random once per process, then a
 * counter. A random draw per file cost 15 µs, a tenth of storing a small file; across
 * processes the random part still keeps names apart.
 */
let randomPart = '';
let counter = 0;
function uniquePart(): string {
  if (randomPart === '' || counter >= 0x1000000) {
    randomPart = randomBytes(5).toString('hex');
    counter = 0;
  }
  return randomPart + (counter++).toString(16).padStart(6, '0');
}

/** A fresh temporary sibling of `path`. */
export function tempSiblingOf(path: RelPath): RelPath {
  const hint = baseName(path).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40);
  return childPath(parentPath(path), `${PREFIX}${uniquePart()}-${hint}`);
}

export function isTempPath(path: string): boolean {
  const name = path.lastIndexOf('/') + 1;
  // Every listed entry passes through here: most names differ in their first characters,
  // and are told apart without a slice or the regular expression.
  return path.startsWith(PREFIX, name) && PATTERN.test(path.slice(name));
}
