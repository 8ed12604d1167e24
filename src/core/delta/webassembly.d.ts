/**
 * The part of the WebAssembly global that the chunker uses (gear.wat). Node has it on
 * every platform; TypeScript declares it only in its DOM and web-worker libraries, which
 * this project does not load.
 */
declare namespace WebAssembly {
  // Merges with the empty `interface Module {}` that sql.js's emscripten types declare.
  interface Module {}
  const Module: { new (bytes: Uint8Array): Module };

  interface Memory {
    readonly buffer: ArrayBuffer;
  }
  const Memory: { new (descriptor: { initial: number; maximum?: number }): Memory };

  interface Instance {
    readonly exports: Record<string, unknown>;
  }
  const Instance: { new (module: Module, imports: Record<string, Record<string, unknown>>): Instance };
}
