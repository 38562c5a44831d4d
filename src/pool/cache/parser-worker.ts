// The worker behind parser.ts: loads libpg-query in its own VM and answers parse requests through shared memory
// (the slots are named in parser.ts). Requests and answers are UTF-8 in one growable SharedArrayBuffer.
import { growFor, PARSER_CTL as C, type GrowableBuffer } from "./parser.ts";

declare const self: Worker;

let parseSync: ((sql: string) => { stmts?: unknown[] }) | null = null;

self.onmessage = (e: MessageEvent) => {
  const { ctl, sab } = e.data as { ctl: Int32Array; sab: GrowableBuffer };
  const data = new Uint8Array(sab);
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  postMessage("ready");
  for (;;) {
    Atomics.wait(ctl, C.request, 0);
    const sql = decoder.decode(data.slice(0, ctl[C.length]));
    let status: number = C.ok;
    let text: string;
    try {
      text = JSON.stringify(parseSync!(sql).stmts ?? []);
    } catch (err) {
      status = C.error;
      text = (err as Error)?.message ?? String(err);
    }
    const bytes = Buffer.byteLength(text);
    if (!growFor(sab, bytes)) {
      status = C.tooBig;
      text = `the parse tree (${bytes} bytes of JSON) is over the parser's ${sab.maxByteLength}-byte buffer`;
    }
    ctl[C.length] = encoder.encodeInto(text, data).written;
    ctl[C.status] = status;
    Atomics.store(ctl, C.request, 0);
    Atomics.store(ctl, C.done, 1);
    Atomics.notify(ctl, C.done);
  }
};

try {
  const m = await import("libpg-query");
  await m.loadModule();
  parseSync = m.parseSync;
  postMessage("loaded");
} catch (err) {
  postMessage({ error: `kvdrive could not load the Postgres parser: ${(err as Error)?.message ?? err}` });
}
