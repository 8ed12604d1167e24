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

/** The local path a `file://` URL or plain path names. Throws EBADURL for a file URL with a host, a query or a fragment. */
export function localPathOf(url: string): string {
  if (/^file:/i.test(url)) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (e) {
      throw bitfogError('EBADURL', `invalid file URL ${JSON.stringify(url)}: ${(e as Error).message}`, { cause: e });
    }
    // A URL parser ends the path at "?" or "#": "file:///data/photos#2" would name
    // /data/photos, a different directory, without a word.
    if (url.includes('?') || url.includes('#')) {
      throw bitfogError('EBADURL', `a file URL has no query or fragment: percent-encode "?" as %3F and "#" as %23 in the path, or give the path itself (${JSON.stringify(url)})`);
    }
    try {
      return fileURLToPath(parsed);
    } catch (e) {
      throw bitfogError('EBADURL', `invalid file URL ${JSON.stringify(url)}: ${(e as Error).message}`, { cause: e });
    }
  }
  return url;
}

export { LocalBackend };
