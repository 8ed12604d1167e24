/** Real backends with a few members replaced, to play a failing disk, a slow write or a plugin that lacks a capability. */

/**
 * `backend` with the members in `overrides` replaced (`undefined` removes one: a capability
 * not offered); every other member is the backend's own, methods bound to it.
 */
export function withOverrides<T extends object>(backend: T, overrides: { [K in keyof T]?: T[K] | undefined }): T {
  return new Proxy(backend, {
    get(target, key) {
      if (Object.hasOwn(overrides, key)) return overrides[key as keyof T];
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
