/**
 * The scheme registry: which provider opens which URL.
 *
 * The core knows no concrete backend. Built-in backends and plugins register their
 * providers here the same way; a URL without a scheme (`./site-a`, `/srv/data`) is a local
 * path and goes to the provider of `file`.
 */
import { bitfogError, isBitfogError } from './errors.ts';
import type { BackendProvider, Destination, OpenOptions, Source } from './types.ts';

export interface RegisteredProvider {
  provider: BackendProvider;
  /** Where it comes from: `built-in`, or the plugin's name. */
  origin: string;
}

const SCHEME_RE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//;

export class BackendRegistry {
  readonly #byScheme = new Map<string, RegisteredProvider>();

  /** Registers a provider. Throws EPLUGIN when one of its schemes is already claimed. */
  register(provider: BackendProvider, origin: string): void {
    for (const raw of provider.schemes) {
      const scheme = raw.toLowerCase();
      const existing = this.#byScheme.get(scheme);
      if (existing) {
        throw bitfogError(
          'EPLUGIN',
          `scheme "${scheme}" of ${origin} is already provided by ${existing.origin}`,
        );
      }
    }
    for (const scheme of provider.schemes) this.#byScheme.set(scheme.toLowerCase(), { provider, origin });
  }

  /** Every registered scheme with its provider, sorted by scheme. */
  list(): Array<{ scheme: string } & RegisteredProvider> {
    return [...this.#byScheme.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([scheme, r]) => ({ scheme, ...r }));
  }

  /** The scheme a URL selects: its own, or `file` for a plain path. */
  schemeOf(url: string): string {
    const m = SCHEME_RE.exec(url);
    return m ? m[1]!.toLowerCase() : 'file';
  }

  /**
   * Opens a URL with its provider. What a plugin's `open` throws that is not a BitfogError,
   * and anything but a backend it returns, becomes EPLUGIN naming the plugin: "Cannot read
   * properties of null" or a bare "boom" said nothing of where they came from.
   */
  async #open(url: string, options: OpenOptions): Promise<{ backend: Source; origin: string }> {
    const { provider, origin } = this.providerFor(url);
    const scheme = this.schemeOf(url);
    let backend: Source;
    try {
      backend = await provider.open(url, options);
    } catch (e) {
      if (origin === 'built-in' || isBitfogError(e)) throw e;
      throw bitfogError('EPLUGIN', `plugin ${origin} could not open a ${scheme}:// URL: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    const looksLikeOne = backend !== null && typeof backend === 'object' && typeof backend.list === 'function' && typeof backend.read === 'function' && typeof backend.close === 'function' && typeof backend.capabilities === 'object';
    if (!looksLikeOne) {
      await (backend as Partial<Source> | null)?.close?.().catch(() => {});
      throw bitfogError('EPLUGIN', `plugin ${origin}: open() of a ${scheme}:// URL returned ${backend === null ? 'null' : typeof backend}, not a backend (an object with list, read, close and capabilities)`);
    }
    return { backend, origin };
  }

  /** The provider for a URL. Throws EBADURL for an unknown scheme, listing the known ones. */
  providerFor(url: string): RegisteredProvider {
    if (url === '') throw bitfogError('EBADURL', 'empty URL');
    const scheme = this.schemeOf(url);
    const found = this.#byScheme.get(scheme);
    if (!found) {
      const known = [...this.#byScheme.keys()].sort().join(', ');
      throw bitfogError('EBADURL', `no backend for "${scheme}://" URLs (known schemes: ${known || 'none'})`);
    }
    return found;
  }

  async openSource(url: string, options: Omit<OpenOptions, 'write'> = {}): Promise<Source> {
    return guardReads((await this.#open(url, { ...options, write: false })).backend);
  }

  async openDestination(url: string, options: Omit<OpenOptions, 'write'> = {}): Promise<Destination> {
    const { backend, origin } = await this.#open(url, { ...options, write: true });
    if (typeof (backend as Partial<Destination>).write !== 'function') {
      await backend.close();
      throw bitfogError('EROFS', `${backend.url} cannot be written to`);
    }
    // A file at a destination is complete or absent: with neither, an interrupted write
    // would leave a partial file under its final name (the conformance kit fails such a
    // plugin too; this keeps one that skipped the kit from writing). The one built-in
    // exception is documented: a classic Go server, which only writes in place.
    const { atomicRename, atomicWrite } = backend.capabilities;
    if (!atomicRename && !atomicWrite && origin !== 'built-in') {
      await backend.close();
      throw bitfogError('EPLUGIN', `${backend.url} cannot be written safely: its plugin (${origin}) declares neither atomic renames nor atomic writes, so an interrupted write could leave a partial file under its final name`);
    }
    return guardReads(backend as Destination);
  }
}

const keepErrorForTheReader = () => {};

/**
 * A stream a backend hands out may fail before the core reads from it: an interrupt
 * destroys it at once, while the core may still be opening the file it goes to. An
 * 'error' event that nothing listens to yet would end the process with a stack trace
 * (seen with S3 and SFTP sources on Ctrl-C). The stream keeps its error (`errored`) and
 * whoever reads it gets it, so a listener that only keeps the process alive loses nothing.
 * Done here, once, for every backend and plugin.
 */
function guardReads<T extends Source>(backend: T): T {
  const read = backend.read.bind(backend);
  backend.read = async (p, options) => {
    const stream = await read(p, options);
    stream.on('error', keepErrorForTheReader);
    return stream;
  };
  return backend;
}
