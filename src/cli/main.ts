/**
 * The bitfog command line. Colours only on a terminal (clipanion would print them even
 * when piped). Backend SDKs load only when a URL of theirs is opened, so `--help` is quick.
 */
import { setFlagsFromString } from 'node:v8';
import { Builtins, Cli } from 'clipanion';
import { commands } from './commands/index.ts';
import { tuneHeapGrowth } from './heap.ts';

// The manifest's SQLite is WebAssembly (sql.js). V8 runs it first as quickly compiled code
// and recompiles a function optimised once it has run a while — and the first turn of the
// event loop after that waited 0.25–0.35 s for the recompile, in every command that opened
// a manifest. A larger budget leaves short commands on the quick code (status: 0.8 s ->
// 0.5 s) while long ones still get optimised code (100k files: fetch 20.9 s, store 41 s,
// against 20.5 s and 48 s before). (Quick code only, --liftoff-only, made large manifests
// slower.) Set before sql.js is first loaded: it is imported when a manifest is opened.
setFlagsFromString('--wasm-tiering-budget=1000000000');
// Room between full collections while the heap is small (see heap.ts): transfers through
// ssh2 and the HTTP stacks allocate a buffer per packet.
tuneHeapGrowth();

const cli = new Cli({
  binaryLabel: 'bitfog — sneakernet sync for terabytes',
  binaryName: 'bitfog',
  binaryVersion: '0.1.0',
  enableColors: process.stdout.isTTY === true && !process.env.NO_COLOR,
});
cli.register(Builtins.HelpCommand);
cli.register(Builtins.VersionCommand);
for (const command of commands) cli.register(command);

// `bitfog ls … | head`: a reader that stops early is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

process.exitCode = await cli.run(process.argv.slice(2));
