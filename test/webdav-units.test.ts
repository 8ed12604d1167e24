/**
 * The WebDAV backend's pure parts, without a server: the streaming multistatus reader
 * (bodies cut at every byte), href decoding, and netrc lookup.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { netrcEntry, resolveCredentials } from '../src/backends/webdav/credentials.ts';
import { BITFOG_NS, DAV_NS, parseMultistatus, type DavResponse } from '../src/backends/webdav/multistatus.ts';
import { hrefSegments } from '../src/backends/webdav/webdav.ts';
import { tempDir } from './helpers/tmp.ts';

const BODY = `<?xml version="1.0" encoding="utf-8"?>
<!-- a comment with <tags> inside -->
<D:multistatus xmlns:D="DAV:" xmlns:ns1="${BITFOG_NS}">
<D:response xmlns:lp1="DAV:">
<D:href>/dav/t1/</D:href>
<D:propstat><D:prop><lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Fri, 27 Nov 2026 06:16:10 GMT</lp1:getlastmodified></D:prop>
<D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><ns1:mtime/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
</D:response>
<D:response>
<D:href>http://host:8080/dav/t1/a%20b%23%25%3f%0anl%c3%a9&amp;x</D:href>
<D:propstat><D:prop>
<resourcetype xmlns="DAV:"/>
<getcontentlength xmlns="DAV:">3</getcontentlength>
<D:getetag>W/"3-6613bff0fc73a"</D:getetag>
<ns1:mtime><![CDATA[1234.5 3]]></ns1:mtime>
<D:displayname>caf&#xe9; &lt;&#233;&gt; 世界</D:displayname>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
</D:response>
</D:multistatus>
`;

async function parseInChunks(body: string, size: number): Promise<DavResponse[]> {
  const bytes = Buffer.from(body, 'utf8');
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  const out: DavResponse[] = [];
  for await (const r of parseMultistatus((async function* () { yield* chunks; })())) out.push(r);
  return out;
}

describe('webdav multistatus reader', () => {
  for (const size of [1, 2, 3, 7, 64, 100_000]) {
    it(`reads a multistatus body cut into ${size}-byte chunks`, async () => {
      const [dir, file] = await parseInChunks(BODY, size);
      assert.equal(dir!.href, '/dav/t1/');
      assert.deepEqual(dir!.props.get(DAV_NS + 'resourcetype')!.children, [DAV_NS + 'collection']);
      assert.equal(dir!.props.has(BITFOG_NS + 'mtime'), false, 'a 404 propstat is not a property');
      assert.equal(file!.href, 'http://host:8080/dav/t1/a%20b%23%25%3f%0anl%c3%a9&x');
      assert.equal(file!.props.get(DAV_NS + 'getcontentlength')!.text, '3');
      assert.deepEqual(file!.props.get(DAV_NS + 'resourcetype')!.children, []);
      assert.equal(file!.props.get(DAV_NS + 'getetag')!.text, 'W/"3-6613bff0fc73a"');
      assert.equal(file!.props.get(BITFOG_NS + 'mtime')!.text, '1234.5 3');
      assert.equal(file!.props.get(DAV_NS + 'displayname')!.text, 'café <é> 世界');
    });
  }

  it('says a truncated body is truncated', async () => {
    await assert.rejects(parseInChunks(BODY.slice(0, BODY.length - 40), 50), /truncated/);
  });
});

describe('webdav hrefs', () => {
  it('decodes absolute URLs and paths segment by segment, whatever the hex case', () => {
    assert.deepEqual(hrefSegments('http://h:1/dav/a%20b/c%3F%23%25%0A'), ['dav', 'a b', 'c?#%\n']);
    assert.deepEqual(hrefSegments('/dav/a%20b/c%3f%23%25%0a/'), ['dav', 'a b', 'c?#%\n']);
    assert.deepEqual(hrefSegments('/dav/%C3%A9t%c3%a9/'), ['dav', 'été']);
    // A server that sends a literal '%' (not percent-encoding) keeps it.
    assert.deepEqual(hrefSegments('/dav/100%/'), ['dav', '100%']);
    // Unencoded UTF-8 and spaces, as some servers send them.
    assert.deepEqual(hrefSegments('/dav/with space/世界'), ['dav', 'with space', '世界']);
  });
});

describe('webdav credentials', () => {
  it('prefers the URL, then the environment, then netrc; never mixes users', async () => {
    const dir = await tempDir('netrc-unit');
    const netrc = path.join(dir, 'netrc');
    await writeFile(
      netrc,
      'machine nas.local login alice password "a secret"\nmachine nas.local login bob password b0b\ndefault login anon password anonpw\nmacdef init\ncd /\n\n',
    );
    assert.deepEqual(netrcEntry(netrc, 'nas.local'), { login: 'alice', password: 'a secret' });
    assert.deepEqual(netrcEntry(netrc, 'NAS.local', 'bob'), { login: 'bob', password: 'b0b' });
    assert.deepEqual(netrcEntry(netrc, 'other.host'), { login: 'anon', password: 'anonpw' });
    assert.equal(netrcEntry(path.join(dir, 'missing'), 'nas.local'), undefined);

    const env = { BITFOG_NETRC: netrc };
    assert.deepEqual(resolveCredentials(new URL('webdav://nas.local/x/'), env), { user: 'alice', password: 'a secret' });
    assert.deepEqual(resolveCredentials(new URL('webdav://bob@nas.local/x/'), env), { user: 'bob', password: 'b0b' });
    assert.deepEqual(resolveCredentials(new URL('webdav://u%40x:p%3Aw@nas.local/x/'), env), { user: 'u@x', password: 'p:w' });
    assert.deepEqual(
      resolveCredentials(new URL('webdav://nas.local/x/'), { ...env, BITFOG_WEBDAV_USER: 'carol', BITFOG_WEBDAV_PASSWORD: 'c' }),
      { user: 'carol', password: 'c' },
    );
    // The environment's password is carol's: not given to the URL's bob, who gets his netrc one.
    assert.deepEqual(
      resolveCredentials(new URL('webdav://bob@nas.local/x/'), { ...env, BITFOG_WEBDAV_USER: 'carol', BITFOG_WEBDAV_PASSWORD: 'c' }),
      { user: 'bob', password: 'b0b' },
    );
    assert.deepEqual(resolveCredentials(new URL('webdav://nas.local/x/'), { BITFOG_NETRC: path.join(dir, 'missing') }), {});
  });
});
