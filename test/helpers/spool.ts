/** A fetch from a local directory into a spool directory, as one trip's first half. */
import { LocalBackend } from '../../src/backends/local/index.ts';
import type { DeltaConfig } from '../../src/core/delta/transfer.ts';
import { fetchToSpool, type FetchResult } from '../../src/core/fetch.ts';
import { HashCache } from '../../src/core/hashcache.ts';
import { Spool } from '../../src/core/spool.ts';

export async function fetchLocalTree(
  dir: string,
  spoolDir: string,
  options: { delta?: DeltaConfig; cache?: HashCache } = {},
): Promise<FetchResult> {
  const source = await LocalBackend.open('file:///site-a', dir, { write: false });
  const spool = await Spool.open(spoolDir, { create: true });
  try {
    return await fetchToSpool({
      source,
      spool,
      cache: options.cache ?? HashCache.memory(),
      ...(options.delta ? { delta: options.delta } : {}),
      reserveBytes: 0,
    });
  } finally {
    await spool.close();
    await source.close();
  }
}
