/**
 * The part of the WebAssembly global that the core uses: the chunker (delta/gear.wat) and
 * the manifest's SQLite (sqlite.ts). Node has it on every platform; TypeScript declares it
 * only in its DOM and web-worker libraries, which this project does not load.
 */
declare namespace WebAssembly {
  // Merges with the empty `interface Module {}` that sql.js's emscripten types declare.
  interface Module {}
  const Module: { new (bytes: Uint8Array): Module };
  /** Compiles on V8's background threads. */
  function compile(bytes: Uint8Array): Promise<Module>;

  interface Memory {
    readonly buffer: ArrayBuffer;
  }
  const Memory: { new (descriptor: { initial: number; maximum?: number }): Memory };

  interface Instance {
    readonly exports: Record<string, unknown>;
  }
  const Instance: { new (module: Module, imports: Record<string, Record<string, unknown>>): Instance };
}
