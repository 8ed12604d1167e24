/**
 * Provider of `file://` URLs and plain local paths.
 */
import { fileURLToPath } from 'node:url';
import { bitfogError } from '../../core/errors.ts';
import type { BackendProvider } from '../../core/types.ts';
import { LocalBackend, localCapabilities } from './local.ts';

export const localProvider: BackendProvider = {
  schemes: ['file'],
  description: 'a directory on this machine (file:///abs/path, or a plain absolute or relative path)',
  capabilities: localCapabilities,
  async open(url, { write }) {
    return LocalBackend.open(url, localPathOf(url), { write });
  },
};

/** The local path a `file://` URL or plain path names. Throws EBADURL for a file URL with a host. */
export function localPathOf(url: string): string {
  if (/^file:/i.test(url)) {
    try {
      return fileURLToPath(url);
    } catch (e) {
      throw bitfogError('EBADURL', `invalid file URL ${JSON.stringify(url)}: ${(e as Error).message}`, { cause: e });
    }
  }
  return url;
}

export { LocalBackend };
