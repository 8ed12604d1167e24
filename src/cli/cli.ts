/**
 * The bitfog command line (loaded by main.ts). Colours only on a terminal (clipanion would
 * print them even when piped). Backend SDKs load only when a URL of theirs is opened, so
 * `--help` is quick.
 */
import { Builtins, Cli } from 'clipanion';
import { commands } from './commands/index.ts';
import { ExitCode } from './exit-codes.ts';
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
// clipanion compiles every registered command into one state machine before it parses the
// command line (about 30 ms for all of ours, at every start): a command line that names a
// command registers only the commands of that name. Any other (none, a typo, --help) gets
// them all, for the full help and clipanion's suggestions.
const args = process.argv.slice(2);
const named = commands.filter((command) => command.paths?.some((p) => p[0] === args[0]));
for (const command of named.length > 0 ? named : commands) cli.register(command);

// `bitfog ls … | head`: a reader that stops early is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

if (named.length > 1 && args.length === 2 && (args[1] === '--help' || args[1] === '-h')) {
  // `fetch` and `store` each have a spool form and a classic form: clipanion would only list
  // both and ask which one. Their help is short enough to show in full.
  process.stdout.write(named.map((command) => cli.usage(command, { detailed: true })).join('\n'));
} else {
  let command: ReturnType<typeof cli.process> | undefined;
  try {
    command = cli.process(args);
  } catch (e) {
    // The command line itself is wrong (unknown command or option, missing or extra
    // arguments, a value an option does not take): clipanion's explanation and usage, on
    // stderr, with the exit code of usage mistakes (clipanion's own run says 1, on stdout).
    process.stderr.write(cli.error(e));
    // `--max -5M`: clipanion takes "-5M" for an option and says only that --max lacks its value.
    const dashed = args.findIndex((a, i) => i > 0 && /^-\d/.test(a) && /^--[a-z]/.test(args[i - 1]!));
    if (dashed > 0) process.stderr.write(`bitfog: "${args[dashed]}" after ${args[dashed - 1]} was read as an option; ${args[dashed - 1]} takes a value that is not negative\n`);
    process.exitCode = ExitCode.USAGE;
  }
  if (command) process.exitCode = await cli.run(command);
}
