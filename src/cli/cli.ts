/**
 * The bitfog command line (loaded by main.ts). Colours only on a terminal (clipanion would
 * print them even when piped). Backend SDKs load only when a URL of theirs is opened, so
 * `--help` is quick.
 */
import { Builtins, Cli } from 'clipanion';
import { commands } from './commands/index.ts';
import { tuneHeapGrowth } from './heap.ts';

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
