/**
 * Provider of `sftp://user@host[:port]/absolute/path` URLs (options and auth: see url.ts).
 * Light: ssh2 and ssh2-sftp-client load only when a URL is opened.
 */
import type { BackendProvider } from '../../core/types.ts';
import { sftpCapabilities } from './capabilities.ts';
import { parseSftpUrl } from './url.ts';

export const sftpProvider: BackendProvider = {
  schemes: ['sftp'],
  description: 'a directory on any SSH server (sftp://user@host[:port]/absolute/path; ssh-agent, keys or BITFOG_SFTP_PASSWORD)',
  capabilities: sftpCapabilities,
  async open(url, { write, env, signal }) {
    const target = parseSftpUrl(url, env ?? process.env);
    const { SftpBackend } = await import('./sftp.ts');
    return SftpBackend.open(target, { write, env: env ?? process.env, ...(signal ? { signal } : {}) });
  },
};

export { parseSftpUrl };
