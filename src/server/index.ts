/**
 * The bitfog HTTP server (`bitfog serve`): the classic protocol and our additions, over
 * areas opened through the backend interfaces. See server.ts for the protocol and
 * config.ts for bitfog.json.
 */
export { createServer, parseAddr, type BitfogServer, type ServerOptions, type ServerStats } from './server.ts';
export { loadConfigFile, parseConfig, readTokenFile, type AreaConfig, type AreasConfig } from './config.ts';
export { defaultCacheDir } from './hashcache.ts';
