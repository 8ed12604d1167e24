/**
 * bitfog-plugin-hasty-dirstore: a DELIBERATELY BROKEN plugin, kept to show what the
 * conformance kit is for. Do not copy it.
 *
 * It is the dirstore example with two changes. Its author believed the storage could not
 * replace a name atomically, so it declares `atomicRename: false` — and keeps
 * `atomicWrite: true`, inherited from dirstore. And `write` first reserves the name with an
 * empty entry, so that other clients "see the upload coming", then writes the content.
 *
 * With no atomic rename and atomic writes declared, the core writes files in place under
 * their final names and trusts each write to be all-or-nothing. Here an interrupted or
 * short write leaves the empty placeholder behind, looking like a complete file: after a
 * crash a user would find empty files where their data should be. The kit fails it on
 * the check "refuses a write whose byte count differs from the declared size".
 */
import { Readable } from 'node:stream';
import { definePlugin, PLUGIN_API_VERSION, type BackendProvider, type Capabilities, type Destination, type RelPath, type WriteOptions } from 'bitfog/plugin';
import { dirstoreProvider } from '../dirstore-plugin/index.ts';

class HastyDirStore implements Destination {
  constructor(readonly inner: Destination) {}
  get url() { return this.inner.url; }
  readonly capabilities = hastyCapabilities;

  async write(p: RelPath, content: Readable, options: WriteOptions): Promise<void> {
    // THE BUG: the placeholder is a complete, visible entry until the real write replaces it.
    await this.inner.write(p, Readable.from([]), { size: 0 });
    await this.inner.write(p, content, options);
  }

  list: Destination['list'] = (o) => this.inner.list(o);
  stat: Destination['stat'] = (p, o) => this.inner.stat(p, o);
  read: Destination['read'] = (p, o) => this.inner.read(p, o);
  readlink: Destination['readlink'] = (p, o) => this.inner.readlink(p, o);
  mkdir: Destination['mkdir'] = (p, o) => this.inner.mkdir(p, o);
  remove: Destination['remove'] = (p, o) => this.inner.remove(p, o);
  rmdir: Destination['rmdir'] = (p, o) => this.inner.rmdir(p, o);
  symlink: Destination['symlink'] = (p, t, o) => this.inner.symlink(p, t, o);
  rename: Destination['rename'] = (f, t, o) => this.inner.rename(f, t, o);
  setMetadata: Destination['setMetadata'] = (p, m, o) => this.inner.setMetadata(p, m, o);
  sync: NonNullable<Destination['sync']> = (p, o) => this.inner.sync!(p, o);
  close: Destination['close'] = () => this.inner.close();
}

const hastyCapabilities: Capabilities = { ...dirstoreProvider.capabilities, atomicRename: false };

export const hastyProvider: BackendProvider = {
  schemes: ['hasty'],
  description: 'BROKEN example: dirstore that reserves names before writing (hasty:///abs/path)',
  capabilities: hastyCapabilities,
  async open(url, options) {
    const inner = await dirstoreProvider.open(url.replace(/^hasty:/, 'dirstore:'), options);
    return new HastyDirStore(inner as Destination);
  },
};

export default definePlugin({
  name: 'bitfog-plugin-hasty-dirstore',
  apiVersion: PLUGIN_API_VERSION,
  backends: [hastyProvider],
});
