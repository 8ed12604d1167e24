/**
 * Provider of `webdav://` (http) and `webdavs://` (https) URLs: a collection on a WebDAV
 * server such as a NAS. Light: the implementation and the `webdav` client load in `open`.
 *
 * URL: `webdav[s]://[user[:password]@]host[:port]/path/`. Credentials: the URL's user part,
 * else BITFOG_WEBDAV_USER / BITFOG_WEBDAV_PASSWORD, else a netrc file (BITFOG_NETRC or
 * ~/.netrc). See credentials.ts.
 */
import type { BackendProvider } from '../../core/types.ts';
import { webdavCapabilities } from './capabilities.ts';


export const webdavProvider: BackendProvider = {
  schemes: ['webdav', 'webdavs'],
  description: 'a WebDAV share, e.g. a NAS (webdav://host[:port]/path/ over http, webdavs:// over https)',
  capabilities: webdavCapabilities,
  async open(url, options) {
    const { WebDavBackend } = await import('./webdav.ts');
    return WebDavBackend.open(url, { write: options.write, env: options.env ?? process.env, ...(options.signal ? { signal: options.signal } : {}) });
  },
};
