/**
 * A streaming reader of WebDAV `207 Multi-Status` PROPFIND bodies.
 *
 * It yields one `DavResponse` per `<D:response>` as soon as its closing tag arrives, so a
 * directory of a hundred thousand entries never sits in memory as one XML document. It is
 * a small namespace-aware tokenizer, not a general XML parser: it knows elements,
 * attributes (for `xmlns` declarations), text, entities, CDATA, comments and processing
 * instructions, which is all a multistatus body contains.
 */
import { StringDecoder } from 'node:string_decoder';

export const DAV_NS = 'DAV:';
/** Namespace of bitfog's own dead properties (see webdav.ts: `bitfog:mtime`). */
export const BITFOG_NS = 'https://bitfog.dev/ns/webdav';

export interface DavResponse {
  /** The `<D:href>` text, entities decoded, percent-encoding untouched. */
  href: string;
  /** HTTP status of the response itself (`<D:status>` outside a propstat), if any. */
  status?: number;
  /** Properties from propstats with a 2xx status, keyed `namespace + localName`. */
  props: Map<string, DavProp>;
}

export interface DavProp {
  /** Text content (for leaf properties). */
  text: string;
  /** `namespace + localName` of child elements (for `resourcetype`: `DAV:collection`). */
  children: string[];
}

interface Frame {
  name: string; // namespace + localName
  ns: Map<string, string>;
  text: string;
  children: string[];
}

/** Parses a multistatus body, yielding each response when it completes. */
export async function* parseMultistatus(body: AsyncIterable<Buffer | string>): AsyncGenerator<DavResponse> {
  const decoder = new StringDecoder('utf8');
  let buf = '';
  const stack: Frame[] = [];
  const done: DavResponse[] = [];
  let current: DavResponse | undefined;
  let propstat: { status?: number; props: Map<string, DavProp> } | undefined;

  const resolve = (qname: string, ns: Map<string, string>, isAttr = false): string => {
    const colon = qname.indexOf(':');
    if (colon < 0) return (isAttr ? '' : (ns.get('') ?? '')) + qname;
    const uri = ns.get(qname.slice(0, colon));
    return (uri ?? `${qname.slice(0, colon)}:`) + qname.slice(colon + 1);
  };

  const open = (raw: string, selfClosing: boolean) => {
    const m = /^([^\s/>]+)/.exec(raw);
    if (!m) return;
    const qname = m[1]!;
    const parentNs = stack.length ? stack[stack.length - 1]!.ns : new Map<string, string>();
    let ns = parentNs;
    const attrRe = /([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
    let a: RegExpExecArray | null;
    attrRe.lastIndex = m[0].length;
    while ((a = attrRe.exec(raw))) {
      const an = a[1]!;
      if (an === 'xmlns' || an.startsWith('xmlns:')) {
        if (ns === parentNs) ns = new Map(parentNs);
        ns.set(an === 'xmlns' ? '' : an.slice(6), decodeEntities(a[2] ?? a[3] ?? ''));
      }
    }
    const frame: Frame = { name: resolve(qname, ns), ns, text: '', children: [] };
    stack.push(frame);
    onOpen(frame);
    if (selfClosing) close();
  };

  const onOpen = (f: Frame) => {
    if (f.name === DAV_NS + 'response') current = { href: '', props: new Map() };
    else if (f.name === DAV_NS + 'propstat') propstat = { props: new Map() };
  };

  const close = () => {
    const f = stack.pop();
    if (!f) return;
    const parent = stack[stack.length - 1];
    parent?.children.push(f.name);
    const parentName = parent?.name;
    if (f.name === DAV_NS + 'href' && parentName === DAV_NS + 'response' && current) current.href = f.text.trim();
    else if (f.name === DAV_NS + 'status' && parentName === DAV_NS + 'propstat' && propstat) propstat.status = statusCode(f.text);
    else if (f.name === DAV_NS + 'status' && parentName === DAV_NS + 'response' && current) current.status = statusCode(f.text);
    else if (parentName === DAV_NS + 'prop' && propstat) propstat.props.set(f.name, { text: f.text, children: f.children });
    else if (f.name === DAV_NS + 'propstat' && propstat && current) {
      const s = propstat.status ?? 200;
      if (s >= 200 && s < 300) for (const [k, v] of propstat.props) current.props.set(k, v);
      propstat = undefined;
    } else if (f.name === DAV_NS + 'response' && current) {
      done.push(current);
      current = undefined;
    }
  };

  const addText = (text: string) => {
    const top = stack[stack.length - 1];
    if (top && text !== '') top.text += text;
  };

  // Consumes every complete token in `buf`. Text is consumed only once the tag after it
  // has arrived, so an entity cut by a chunk boundary is always decoded whole.
  const feed = (final: boolean) => {
    let i = 0;
    for (;;) {
      const lt = buf.indexOf('<', i);
      if (lt < 0) break;
      if (lt > i) addText(decodeEntities(buf.slice(i, lt)));
      i = lt;
      let end: number;
      if (buf.startsWith('<!--', i)) {
        end = buf.indexOf('-->', i + 4);
        if (end < 0) break;
        i = end + 3;
      } else if (buf.startsWith('<![CDATA[', i)) {
        end = buf.indexOf(']]>', i + 9);
        if (end < 0) break;
        addText(buf.slice(i + 9, end));
        i = end + 3;
      } else if (buf.startsWith('<?', i) || buf.startsWith('<!', i)) {
        end = buf.indexOf('>', i);
        if (end < 0) break;
        i = end + 1;
      } else {
        end = tagEnd(buf, i);
        if (end < 0) break;
        const raw = buf.slice(i + 1, end);
        if (raw.startsWith('/')) close();
        else if (raw.endsWith('/')) open(raw.slice(0, -1), true);
        else open(raw, false);
        i = end + 1;
      }
    }
    buf = buf.slice(i);
    if (final && (buf.trim() !== '' || stack.length > 0)) throw new Error('truncated multistatus body');
  };

  for await (const chunk of body) {
    buf += typeof chunk === 'string' ? chunk : decoder.write(chunk);
    feed(false);
    while (done.length) yield done.shift()!;
  }
  buf += decoder.end();
  feed(true);
  while (done.length) yield done.shift()!;
}

/** Index of the `>` that ends the tag starting at `start`, skipping quoted attribute values. */
function tagEnd(s: string, start: number): number {
  let quote = '';
  for (let i = start + 1; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '>') return i;
  }
  return -1;
}

function statusCode(line: string): number | undefined {
  const m = /HTTP\/[\d.]+\s+(\d{3})/.exec(line);
  return m ? Number(m[1]) : undefined;
}

const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

export function decodeEntities(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-zA-Z]+);/g, (all, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return Number.isFinite(cp) ? String.fromCodePoint(cp) : all;
    }
    return NAMED[e] ?? all;
  });
}
