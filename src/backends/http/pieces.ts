/**
 * Downloads that read the socket into memory kept from file to file (Source.readPieces).
 *
 * Node's HTTP client reads every chunk into new memory, and on this kind of machine new
 * memory costs more than the bytes: the kernel faults in and zeroes every fresh page, and
 * the collector frees them again. Measured over loopback, 1 GiB in 64 files with SHA-256
 * and writes: 3.0 s through `http.request`, 2.0–2.2 s through a socket that reads into a
 * few reused blocks (`net.Socket`'s `onread`). So plain-HTTP downloads of whole files use
 * their own keep-alive connections: a response is parsed by `http-parser-js`, and its body
 * lands side by side in blocks of BLOCK_BYTES, each handed on whole once full (one large
 * write, no copy) and refilled once its consumer is done with it. Everything else (other
 * requests, TLS, ranged reads, error answers) goes through `http.request`.
 */
import net from 'node:net';
import { HTTPParser } from 'http-parser-js';
import { abortError, bitfogError } from '../../core/errors.ts';

/** Body bytes gather in blocks this large before they are handed on. */
const BLOCK_BYTES = 1024 * 1024;
/** Blocks per connection: one being filled, the others out with their consumer. */
const BLOCKS = 4;
/**
 * The most one socket read may take. Small reads land in memory that is still in the
 * processor's cache when they are hashed (measured: 1 MiB reads made the receive alone
 * take 1.4 s per GiB instead of 0.9–1.1 s).
 */
const READ_WINDOW_BYTES = 64 * 1024;

/** What a response said before its body. */
export interface PieceResponseHead {
  status: number;
  /** Lower-case names; the first value of each. */
  headers: Map<string, string>;
}

/** How a `PieceConnection.get` ended. */
export interface PieceGetResult {
  /** The whole body was read (false: the connection ended or failed first). */
  complete: boolean;
  /** Why it ended early, when it did. */
  error?: unknown;
}

/** One keep-alive connection, reading into its own blocks. One request at a time. */
export class PieceConnection {
  readonly #socket: net.Socket;
  readonly #free: Buffer[] = [];
  #block: Buffer;
  /** Where the next read lands in #block (everything before it is body or handed). */
  #fill = 0;
  #paused = false;
  #closed = false;
  /** The response being read: told of bytes and of the end of the socket. */
  #onRead: ((n: number) => boolean) | undefined;
  #onEnd: ((error?: unknown) => void) | undefined;

  private constructor(host: string, port: number) {
    for (let i = 0; i < BLOCKS; i++) this.#free.push(Buffer.allocUnsafeSlow(BLOCK_BYTES));
    this.#block = this.#free.pop()!;
    this.#socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        // Called after each read (and once at the start) for where the next one lands.
        buffer: () => this.#block.subarray(this.#fill, this.#fill + READ_WINDOW_BYTES),
        callback: (n: number) => {
          if (this.#onRead) return this.#onRead(n);
          this.destroy(); // bytes nobody asked for: this connection is out of step
          return false;
        },
      },
    });
    this.#socket.on('error', (e) => this.#end(e));
    this.#socket.on('end', () => this.#end());
    this.#socket.on('close', () => this.#end());
  }

  static connect(host: string, port: number, signal?: AbortSignal): Promise<PieceConnection> {
    const conn = new PieceConnection(host, port);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        conn.destroy();
        reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      conn.#socket.once('connect', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve(conn);
      });
      conn.#socket.once('error', (e) => {
        signal?.removeEventListener('abort', onAbort);
        reject(e);
      });
    });
  }

  /** False once the socket ended or failed: such a connection is not reused. */
  get usable(): boolean {
    return !this.#closed && !this.#socket.destroyed;
  }

  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
  }

  #end(error?: unknown): void {
    this.#closed = true;
    const onEnd = this.#onEnd;
    this.#onEnd = undefined;
    onEnd?.(error);
  }

  /**
   * Sends `head` (a whole request head, CRLF CRLF included) and reads the response:
   * `onHead` decides whether its body is wanted; the body goes to `onPiece` in blocks,
   * each left alone until its promise settles. Resolves once the response ended (or the
   * connection did) and every piece's promise settled; rejects only with what `onPiece`
   * rejected with (then the connection is closed).
   */
  get(
    head: string,
    onHead: (head: PieceResponseHead) => boolean,
    onPiece: (piece: Buffer) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<PieceGetResult> {
    if (!this.usable) return Promise.resolve({ complete: false, error: bitfogError('ETRANSIENT', 'connection closed') });
    const parser = new HTTPParser(HTTPParser.RESPONSE);
    const out = new Set<Promise<void>>();
    let pieceError: { error: unknown } | undefined;
    let handedFrom = this.#fill;
    let bodyEnd = this.#fill;
    let complete = false;
    let declined = false;
    let keepAlive = true;

    return new Promise<PieceGetResult>((resolve, reject) => {
      let settled = false;
      const finish = (error?: unknown) => {
        if (settled) return;
        settled = true;
        this.#onRead = undefined;
        this.#onEnd = undefined;
        signal?.removeEventListener('abort', onAbort);
        // A body left unread (declined) or half read leaves the connection out of step: not reused.
        if (!complete || declined || !keepAlive || pieceError || error !== undefined) this.destroy();
        // Pieces out keep their blocks until they settle: only then may the caller go on.
        void Promise.allSettled([...out]).then(() => {
          if (pieceError) reject(pieceError.error);
          else resolve({ complete, ...(error !== undefined ? { error } : {}) });
        });
      };
      const onAbort = () => finish(abortError(signal!));
      if (signal?.aborted) return finish(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });

      /** Hands [handedFrom, bodyEnd) on and moves to a free block; false when none is left (pause). */
      const handOn = (): void => {
        if (bodyEnd > handedFrom) {
          const block = this.#block;
          const piece = this.#block.subarray(handedFrom, bodyEnd);
          const done = onPiece(piece).then(
            () => {
              out.delete(done);
              this.#free.push(block);
              if (this.#paused && !settled) {
                this.#paused = false;
                this.#socket.resume();
              }
            },
            (error: unknown) => {
              out.delete(done);
              pieceError ??= { error };
              finish();
            },
          );
          out.add(done);
          // The block is out: the next read goes to another (there always is one, see below).
          this.#block = this.#free.pop()!;
          handedFrom = bodyEnd = this.#fill = 0;
        }
      };

      parser[HTTPParser.kOnHeadersComplete] = (info: { statusCode: number; headers: string[]; shouldKeepAlive: boolean }) => {
        keepAlive = info.shouldKeepAlive;
        const headers = new Map<string, string>();
        for (let i = 0; i + 1 < info.headers.length; i += 2) {
          const name = info.headers[i]!.toLowerCase();
          if (!headers.has(name)) headers.set(name, info.headers[i + 1]!);
        }
        if (!onHead({ status: info.statusCode, headers })) declined = true;
        return 0;
      };
      parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
        if (declined) return;
        // Body bytes are moved down over what the parser consumed (the head, chunk sizes),
        // so that the body lies side by side from handedFrom.
        const at = chunk.byteOffset - this.#block.byteOffset;
        if (at !== bodyEnd) this.#block.copyWithin(bodyEnd, at, at + chunk.length);
        bodyEnd += chunk.length;
      };
      parser[HTTPParser.kOnMessageComplete] = () => {
        complete = true;
      };

      this.#onRead = (n: number): boolean => {
        if (settled) return false;
        const result = parser.execute(this.#block, this.#fill, n);
        if (result instanceof Error) {
          finish(bitfogError('ETRANSIENT', `bad HTTP response: ${result.message}`));
          return false;
        }
        if (declined) {
          finish();
          return false;
        }
        this.#fill = bodyEnd;
        if (complete) {
          handOn();
          finish();
          return true;
        }
        if (BLOCK_BYTES - this.#fill < READ_WINDOW_BYTES) {
          handOn();
          // The block just taken is the last free one: read into it, then wait for one back.
          if (this.#free.length === 0) {
            this.#paused = true;
            return false;
          }
        }
        return true;
      };
      this.#onEnd = (error?: unknown) => {
        if (!complete && error === undefined) {
          // A body delimited by the end of the connection is complete now.
          parser.finish();
          this.#fill = bodyEnd;
          if (complete) handOn();
        }
        finish(complete ? undefined : (error ?? bitfogError('ETRANSIENT', 'connection closed during the response')));
      };

      if (this.#paused) {
        this.#paused = false;
        this.#socket.resume();
      }
      this.#socket.write(head);
    });
  }
}

/** Idle PieceConnections to one server, reused; as many are made as are asked for at once. */
export class PieceConnections {
  readonly #idle: PieceConnection[] = [];
  #closed = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  async take(signal?: AbortSignal): Promise<PieceConnection> {
    if (this.#closed) throw bitfogError('EIO', 'connections closed');
    for (let conn = this.#idle.pop(); conn; conn = this.#idle.pop()) if (conn.usable) return conn;
    return PieceConnection.connect(this.host, this.port, signal);
  }

  give(conn: PieceConnection): void {
    if (!this.#closed && conn.usable) this.#idle.push(conn);
    else conn.destroy();
  }

  close(): void {
    this.#closed = true;
    for (const conn of this.#idle.splice(0)) conn.destroy();
  }
}
