/**
 * Snapshot files of the classic commands (`builddb`, `emptydb`): a manifest holding one
 * snapshot. Spool manifests are accepted too (their source or destination snapshot).
 */
import { bitfogError } from '../core/errors.ts';
import { Manifest, type Snapshot } from '../core/manifest.ts';

/** Loads the snapshot in a `builddb`/`emptydb` file. Throws ENOENT, EBADSPOOL. */
export async function loadSnapshotFile(file: string): Promise<Snapshot> {
  const manifest = await Manifest.load(file);
  try {
    for (const role of ['snapshot', 'source', 'destination'] as const) {
      const s = manifest.getSnapshot(role);
      if (s && manifest.snapshotRoles().length === 1) return s;
      if (s && role === 'snapshot') return s;
    }
    throw bitfogError('EBADSPOOL', `${file} holds no single snapshot (roles: ${manifest.snapshotRoles().join(', ') || 'none'}); make one with "bitfog builddb"`);
  } finally {
    manifest.close();
  }
}
