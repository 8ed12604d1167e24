/**
 * Snapshot files of the classic commands (`builddb`, `emptydb`): a manifest holding one
 * snapshot. Spool manifests are accepted too (their source or destination snapshot).
 */
import { bitfogError } from '../core/errors.ts';
import { Manifest, type Snapshot } from '../core/manifest.ts';

/**
 * Loads the snapshot in a `builddb`/`emptydb` file, and what its scan skipped. Throws
 * ENOENT, EBADSPOOL.
 */
export async function loadSnapshotFile(file: string): Promise<{ snapshot: Snapshot; skipped: Array<{ path: string; reason: string }> }> {
  const manifest = await Manifest.load(file);
  try {
    for (const role of ['snapshot', 'source', 'destination'] as const) {
      const s = manifest.getSnapshot(role);
      if (s && (manifest.snapshotRoles().length === 1 || role === 'snapshot')) return { snapshot: s, skipped: manifest.skipped(role) };
    }
    throw bitfogError('EBADSPOOL', `${file} holds no single snapshot (roles: ${manifest.snapshotRoles().join(', ') || 'none'}); make one with "bitfog builddb"`);
  } finally {
    manifest.close();
  }
}
