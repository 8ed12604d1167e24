/**
 * `bitfog serve`: serves the areas of a classic `bitfog.json` over HTTP(S).
 */
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { Command, Option, UsageError } from 'clipanion';
import { bitfogError } from '../../core/errors.ts';
import { BitfogCommand } from '../base.ts';

export class ServeCommand extends BitfogCommand {
  static override paths = [['serve']];

  static override usage = Command.Usage({
    category: 'Server',
    description: 'Serve areas over HTTP, compatible with classic bitfog clients',
    details: `
      Reads the classic \`bitfog.json\` (area name → \`{"path", "writable", "checksum"}\`) and
      serves each area: \`GET /\` lists area names, \`GET /AREA/\` lists files (NDJSON), and
      files are read with GET, written with PUT and removed with DELETE (writable areas
      only). Classic bitfog clients work unchanged; bitfog's own \`http://host:port/AREA/\`
      backend also uses ranges, SHA-256 listings and atomic, verified uploads.

      An area \`path\` may be absolute or relative; a relative path is resolved against the
      directory that holds the configuration file (not the current directory). A missing
      area directory stops the server at start-up. An area's path may be a URL of a
      plugin's scheme (--plugin). \`checksum: true\` lists CRC-64 and
      SHA-256 hashes, cached outside the area (see --cache-dir) so that re-listing an
      unchanged area does not re-read it.

      Access: no request reads or writes outside its area (no \`..\`, encoded separators,
      or symlinks leading out). Tokens are optional: \`--token-file\` (or the environment
      variable BITFOG_SERVE_TOKEN; set but empty is refused) requires one token for
      everything; per area,
      \`readTokenFile\`/\`writeTokenFile\` (or \`readTokenEnv\`/\`writeTokenEnv\`) in bitfog.json
      set separate read and write tokens. Clients send \`Authorization: Bearer TOKEN\`
      (bitfog reads BITFOG_HTTP_TOKEN or BITFOG_HTTP_TOKEN_FILE).

      Each request is logged to stderr as one line (client, method, path, status, bytes in
      and out, time) unless --quiet. Stop with Ctrl-C.
    `,
    examples: [
      ['Serve bitfog.json of the current directory on port 8675', 'bitfog serve'],
      ['Serve on loopback only, another port', 'bitfog serve --conf /etc/bitfog.json --addr 127.0.0.1:9000'],
      ['Serve HTTPS with a token', 'bitfog serve --tls-cert cert.pem --tls-key key.pem --token-file /etc/bitfog.token'],
    ],
  });

  conf = Option.String('--conf', 'bitfog.json', { description: 'The configuration file (classic bitfog.json)' });
  addr = Option.String('--addr', ':8675', { description: 'Listen address: :PORT (all interfaces), HOST:PORT or [IPv6]:PORT' });
  tlsCert = Option.String('--tls-cert', { description: 'PEM certificate (chain): serve HTTPS' });
  tlsKey = Option.String('--tls-key', { description: 'PEM private key for --tls-cert' });
  tokenFile = Option.String('--token-file', { description: 'File holding a bearer token required for every request (else $BITFOG_SERVE_TOKEN, if set)' });
  classic = Option.Boolean('--classic', false, { description: 'Speak only the classic protocol (no SHA-256 in listings, no ranges or extensions)' });

  protected async run(signal: AbortSignal): Promise<number> {
    const stderr = this.context.stderr;
    // The server (koa and friends) loads only when serving, so `bitfog --help` stays quick.
    const { createServer, defaultCacheDir, loadConfigFile, readTokenFile } = await import('../../server/index.ts');
    if ((this.tlsCert === undefined) !== (this.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    const areas = loadConfigFile(path.resolve(this.conf));
    const envToken = process.env.BITFOG_SERVE_TOKEN;
    // Set but empty is a mistake (a variable not filled in), not a wish to serve without a token.
    if (!this.tokenFile && envToken !== undefined && envToken.trim() === '') {
      throw bitfogError('EUSAGE', 'BITFOG_SERVE_TOKEN is set but empty; give it a token, or unset it to serve without one');
    }
    const token = this.tokenFile ? readTokenFile(this.tokenFile) : envToken?.trim() || undefined;
    let tls: { cert: Buffer; key: Buffer } | undefined;
    if (this.tlsCert && this.tlsKey) {
      try {
        tls = { cert: readFileSync(this.tlsCert), key: readFileSync(this.tlsKey) };
      } catch (e) {
        throw bitfogError('EUSAGE', `cannot read the TLS certificate or key: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
      }
    }
    let server;
    try {
      server = await createServer({
        areas,
        addr: this.addr,
        ...(tls ? { tls } : {}),
        ...(token ? { token } : {}),
        cacheDir: this.noCache ? false : (this.cacheDir ?? defaultCacheDir()),
        classic: this.classic,
        // The areas' URLs may use a plugin's scheme (--plugin, BITFOG_PLUGINS, the config file).
        registry: await this.registry(),
        ...(this.quiet ? {} : { onLog: (line: string) => stderr.write(`${new Date().toISOString()} ${line}\n`) }),
      });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A busy or reserved port is not a mistake in the command line (exit 1, no usage); an
      // address this machine does not have is.
      if (code === 'EADDRINUSE') throw bitfogError('EIO', `cannot listen on ${this.addr}: the port is in use; choose another with --addr`, { cause: e });
      if (code === 'EACCES') throw bitfogError('EACCES', `cannot listen on ${this.addr}: not allowed to use that port; choose another with --addr`, { cause: e });
      if (code === 'EADDRNOTAVAIL') throw bitfogError('EUSAGE', `cannot listen on ${this.addr}: this machine has no such address`, { cause: e });
      throw e;
    }
    stderr.write(`bitfog: serving ${[...areas.keys()].join(', ') || 'no areas'} on ${server.url}\n`);
    // Serve until Ctrl-C / SIGTERM (the base class turns them into this signal).
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    await server.close();
    return 0;
  }
}
