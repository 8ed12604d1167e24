import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { bitfogError } from '../../core/errors.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';

export class UiCommand extends BitfogCommand {
  static paths = [['ui']];
  static usage = Command.Usage({
    category: 'Sneakernet cycle',
    description: 'Show a spool in the browser: what it carries, what is left, the planned trips and the history.',
    details: `
      Serves a page about the spool on 127.0.0.1 and prints its URL; open it in a browser. Ctrl-C stops it. Like \`status\`, it reads the manifest without taking the spool's lock, so it can stay open while \`fetch\` or \`store\` run; the page refreshes itself when they finish.

      The page shows what the spool carries (by folder and by size), what is left to carry by folder, the trips still needed at this spool's size and which files go on each, conflicts and skipped entries with their reasons, and the trips made so far. The same numbers are available as JSON for scripts (see docs/dashboard.md).
    `,
    examples: [
      ['Show a spool on a free port', '$0 ui /media/usb/spool'],
      ['On a fixed port', '$0 ui /media/usb/spool --port 8676'],
    ],
  });

  spool = Option.String({ name: 'spool' });
  port = Option.String('--port', '0', {
    description: 'Port on 127.0.0.1 (default 0: any free port)',
    validator: t.cascade(t.isNumber(), [t.isInteger(), t.isInInclusiveRange(0, 65535)]),
  });

  protected async run(signal: AbortSignal): Promise<number> {
    // The server (koa) loads only for this command, so `bitfog --help` stays quick.
    const { startSpoolDashboard } = await import('../../server/dashboard/spool-server.ts');
    let dashboard;
    try {
      dashboard = await startSpoolDashboard({ spool: this.spool, port: this.port });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Not a mistake in the command line (exit 1, no usage): the port is taken or reserved.
      if (code === 'EADDRINUSE') throw bitfogError('EIO', `cannot listen on 127.0.0.1:${this.port}: the port is in use; choose another with --port`, { cause: e });
      if (code === 'EACCES') throw bitfogError('EACCES', `cannot listen on 127.0.0.1:${this.port}: not allowed to use that port; choose another with --port`, { cause: e });
      throw e;
    }
    this.out(`bitfog: showing spool ${this.spool} at ${dashboard.url} (Ctrl-C stops)`);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    await dashboard.close();
    return ExitCode.OK;
  }
}
