/**
 * The bitfog command line. Colours only on a terminal (clipanion would print them even
 * when piped). Backend SDKs load only when a URL of theirs is opened, so `--help` is quick.
 */
import { Builtins, Cli } from 'clipanion';
import { commands } from './commands/index.ts';

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
