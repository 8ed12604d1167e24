import { createDefaultRegistry } from '../src/backends/index.ts';
import { HttpBackend } from '../src/backends/http/client.ts';
import { testBackend } from '../src/conformance/index.ts';
import { startServer } from './helpers/http.ts';

// Each test gets a fresh server with a fresh writable area, over loopback.
testBackend({
  name: 'http (bitfog serve, checksum area)',
  open: async () => {
    const s = await startServer({ area: { writable: true, checksum: true } });
    return HttpBackend.open(`${s.url}area/`, { write: true, env: {} });
  },
  cycle: {
    registry: createDefaultRegistry(),
    newUrl: async () => `${(await startServer({ 'a rea': { writable: true, checksum: true } })).url}a%20rea/`,
  },
});

testBackend({
  name: 'http (bitfog serve, area without checksum)',
  largeFileBytes: 3 * 1024 * 1024 + 11,
  open: async () => {
    const s = await startServer({ 'no sum': { writable: true, checksum: false } });
    return HttpBackend.open(`${s.url}no%20sum/`, { write: true, env: {} });
  },
  cycle: {
    registry: createDefaultRegistry(),
    newUrl: async () => `${(await startServer({ plain: { writable: true } })).url}plain/`,
  },
});
