/**
 * How a test reaches a real service started by `npm test` (see test/run.ts).
 * Outside CI a missing service skips the tests that need it; with CI=true it fails them.
 */
import type { TestContext } from 'node:test';

/**
 * Returns the named environment variables, or undefined when the service is not running
 * (in which case `skip` has been called, or the test fails under CI).
 */
export function serviceEnv<K extends string>(service: string, keys: readonly K[]): Record<K, string> | undefined {
  const missing = keys.filter((k) => !process.env[k]);
  if (missing.length === 0) return Object.fromEntries(keys.map((k) => [k, process.env[k]!])) as Record<K, string>;
  if (process.env.CI === 'true') {
    throw new Error(`service ${service} is not running (missing ${missing.join(', ')}); in CI that is a failure`);
  }
  return undefined;
}

/** Skip message for a test whose service is absent outside CI. */
export function skipWithoutService(t: TestContext, service: string): void {
  t.skip(`service ${service} not running (start it through npm test)`);
}
