/**
 * bitfog-plugin-dirstore: the plugin entry. It stays light — the backend module loads
 * only when a `dirstore://` URL is opened.
 *
 *   bitfog --plugin bitfog-plugin-dirstore store /media/usb/spool dirstore:///mnt/archive
 */
import { fileURLToPath } from 'node:url';
import { bitfogError, definePlugin, PLUGIN_API_VERSION, type BackendProvider } from 'bitfog/plugin';
import { dirstoreCapabilities } from './capabilities.ts';

export const dirstoreProvider: BackendProvider = {
  schemes: ['dirstore'],
  description: 'a local directory holding a flat, hashed index and content objects (dirstore:///abs/path)',
  capabilities: dirstoreCapabilities,
  async open(url, { write }) {
    const { DirStore } = await import('./dirstore.ts');
    return DirStore.open(url, dirstoreRoot(url), { write });
  },
};

/** The local directory a `dirstore:///abs/path` URL names. Throws EBADURL. */
export function dirstoreRoot(url: string): string {
  const parsed = URL.canParse(url) ? new URL(url) : undefined;
  if (!parsed || parsed.protocol !== 'dirstore:' || parsed.host !== '' || parsed.search !== '' || parsed.hash !== '') {
    throw bitfogError('EBADURL', `expected dirstore:///absolute/path, got ${JSON.stringify(url)}`);
  }
  return fileURLToPath(`file://${parsed.pathname}`);
}

export default definePlugin({
  name: 'bitfog-plugin-dirstore',
  apiVersion: PLUGIN_API_VERSION,
  backends: [dirstoreProvider],
});
