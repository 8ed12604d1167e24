/**
 * The bitfog command line. Colours only on a terminal (clipanion would print them even
 * when piped). Backend SDKs load only when a URL of theirs is opened, so `--help` is quick.
 */
import { setFlagsFromString } from 'node:v8';
import { Builtins, Cli } from 'clipanion';
import { commands } from './commands/index.ts';

// The manifest's SQLite is WebAssembly (sql.js). V8 compiles it twice: quickly (Liftoff),
// then optimised in the background — and a command that opens a manifest waited for the
// second compile, 0.25–0.35 s of every run on a 2-core machine. The quick code is fast
// enough for what bitfog asks of SQLite: measured on a 100k-entry manifest, builddb took
// 2.2 s with it alone against 2.4–3.5 s with both. Set before sql.js is first loaded
// (it is imported only when a manifest is opened).
setFlagsFromString('--liftoff-only');

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
