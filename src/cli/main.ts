/**
 * The entry of the bitfog command line: sets up V8 for the manifest's SQLite, starts
 * compiling it when the command will open a database, and only then loads the commands
 * (cli.ts), so that the compile runs on other threads while they load.
 */
import { setFlagsFromString } from 'node:v8';
import { startLoadingSqlite } from '../core/sqlite.ts';

// The manifest's SQLite is WebAssembly (sql.js). V8 runs it first as quickly compiled code
// and recompiles a function optimised once it has run a while — and the first turn of the
// event loop after that waited 0.25–0.35 s for the recompile, in every command that opened
// a manifest. A larger budget leaves short commands on the quick code (status: 0.8 s ->
// 0.5 s) while long ones still get optimised code (100k files: fetch 20.9 s, store 41 s,
// against 20.5 s and 48 s before). (Quick code only, --liftoff-only, made large manifests
// slower.)
setFlagsFromString('--wasm-tiering-budget=1000000000');
// And all of that quick code is compiled at once, on V8's background threads, rather than
// each function on the main thread the first time it runs: opening a manifest ran some
// 40 ms of such compiles. Both flags are set before sql.js is first compiled.
setFlagsFromString('--no-wasm-lazy-compilation');

/**
 * Commands that always open a manifest or a hash cache. A wrong guess costs only time: the
 * compile for one that needs none competes for the processor, and one not listed compiles
 * when it opens one. builddb is not listed: a rescan of an unchanged tree opens none, and
 * the compile made it slower (30k files: 0.52 s -> 0.53 s).
 */
const OPENS_A_DATABASE = new Set(['fetch', 'store', 'status', 'verify', 'emptydb', 'ui', 'serve']);
if (OPENS_A_DATABASE.has(process.argv[2] ?? '')) startLoadingSqlite();

await import('./cli.ts');
