/**
 * `bitfog serve`: serves the areas of a classic `bitfog.json` over HTTP(S).
 */
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { Command, Option, UsageError } from 'clipanion';
import { isBitfogError } from '../../core/errors.ts';
import { createServer, loadConfigFile, readTokenFile } from '../../server/index.ts';

export class ServeCommand extends Command {
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
      area directory stops the server at start-up. \`checksum: true\` lists CRC-64 and
      SHA-256 hashes, cached outside the area (see --cache-dir) so that re-listing an
      unchanged area does not re-read it.

      Access: no request reads or writes outside its area (no \`..\`, encoded separators,
      or symlinks leading out). Tokens are optional: \`--token-file\` (or the environment
      variable BITFOG_SERVE_TOKEN) requires one token for everything; per area,
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
  quiet = Option.Boolean('--quiet,-q', false, { description: 'Do not log requests' });
  tlsCert = Option.String('--tls-cert', { description: 'PEM certificate (chain): serve HTTPS' });
  tlsKey = Option.String('--tls-key', { description: 'PEM private key for --tls-cert' });
  tokenFile = Option.String('--token-file', { description: 'File holding a bearer token required for every request' });
  cacheDir = Option.String('--cache-dir', { description: 'Where hash caches live (default: $BITFOG_CACHE_DIR, else $XDG_CACHE_HOME/bitfog, else ~/.cache/bitfog)' });
  classic = Option.Boolean('--classic', false, { description: 'Speak only the classic protocol (no SHA-256 in listings, no ranges or extensions)' });

  async execute(): Promise<number> {
    const stderr = this.context.stderr;
    if ((this.tlsCert === undefined) !== (this.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    let server;
    let areasNames: string[] = [];
    try {
      const areas = loadConfigFile(path.resolve(this.conf));
      areasNames = [...areas.keys()];
      const token = this.tokenFile ? readTokenFile(this.tokenFile) : process.env.BITFOG_SERVE_TOKEN?.trim() || undefined;
      const tls = this.tlsCert && this.tlsKey ? { cert: readFileSync(this.tlsCert), key: readFileSync(this.tlsKey) } : undefined;
      server = await createServer({
        areas,
        addr: this.addr,
        ...(tls ? { tls } : {}),
        ...(token ? { token } : {}),
        ...(this.cacheDir ? { cacheDir: this.cacheDir } : {}),
        classic: this.classic,
        ...(this.quiet ? {} : { onLog: (line: string) => stderr.write(`${new Date().toISOString()} ${line}\n`) }),
      });
    } catch (e) {
      if (isBitfogError(e, 'EUSAGE')) throw new UsageError(e.message);
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
        stderr.write(`bitfog: cannot listen on ${this.addr}: ${code}\n`);
        return 1;
      }
      if (code === 'ENOENT' && (this.tlsCert || this.tlsKey)) {
        stderr.write(`bitfog: cannot read the TLS certificate or key\n`);
        return 1;
      }
      throw e;
    }
    stderr.write(`bitfog: serving ${[...areasNames].join(', ')} on ${server.url}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await server.close();
    return 0;
  }
}
