/**
 * `bitfog/plugin`: everything a plugin author imports, in one stable place.
 *
 *   import { definePlugin, PLUGIN_API_VERSION, bitfogError } from 'bitfog/plugin';
 *   export default definePlugin({ name: 'bitfog-plugin-tape', apiVersion: PLUGIN_API_VERSION, backends: [tapeProvider] });
 *
 * The conformance kit is `bitfog/conformance`. See plugins.md.
 */
export { definePlugin, PLUGIN_API_VERSION, type BitfogPlugin } from './core/plugins.ts';
export type {
  BackendProvider,
  Capabilities,
  Destination,
  Entry,
  EntryKind,
  FingerprintOptions,
  ListOptions,
  Metadata,
  OpenOptions,
  ReadOptions,
  ReadSmallFileOptions,
  SignalOption,
  Source,
  WriteOptions,
} from './core/types.ts';
export { abortError, bitfogError, BitfogError, ErrorCode, isBitfogError, throwIfAborted, toBitfogError } from './core/errors.ts';
export {
  ancestors,
  baseName,
  childPath,
  comparePaths,
  parentPath,
  relPathProblem,
  ROOT,
  toRelPath,
  type RelPath,
} from './core/paths.ts';
