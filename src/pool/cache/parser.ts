// The Postgres parser (libpg-query, compiled to WASM) in a worker thread, called synchronously.
//
// Why a worker: the module's WASM memory (128 MiB at instantiation, 256 once it grows) counts towards the heap
// size of the JavaScriptCore VM that holds it, and the collector sizes the allocation it allows before its next
// collection from that heap size. In kvdrive's own VM it spaced collections so far apart that 300-600 MiB of
// garbage piled up under load (a KV GET flood, pgbench -S through the pooler). A worker has its own VM, so
// kvdrive's heap only holds the shared buffers below.
//
// The call is synchronous, as the parser's own parseSync is: the statement goes into a shared buffer, the caller
// blocks on Atomics.wait until the worker writes the parse tree back as JSON (about 30 µs more than parsing in
// this thread; trees are memoized by statement text by the callers). The data buffer starts at 1 MiB and grows,
// on either side, up to DATA_MAX_BYTES; a statement or tree beyond it is refused with ParserLimitError, which the
// callers treat as unparsed (nothing cached, every table assumed written, the session untracked). So do they a
// ParserUnavailableError while a worker that stopped answering is replaced, without remembering that verdict.

/** The slots of the control array shared with parser-worker.ts, and the answer's statuses. */
export const PARSER_CTL = {
  /** 1 while a request waits for the worker. */
  request: 0,
  /** Bytes of the request, then of the answer. */
  length: 1,
  /** 1 once the answer is written. */
  done: 2,
  /** ok, error (the text is the parser's message) or tooBig. */
  status: 3,
  slots: 4,
  ok: 0,
  error: 1,
  tooBig: 2,
} as const;
const C = PARSER_CTL;

const DATA_INITIAL_BYTES = 1024 * 1024;
const DATA_MAX_BYTES = 256 * 1024 * 1024;
/** A parse that takes longer means the worker is gone: it is replaced, and this statement counts as unparsed. */
const CALL_TIMEOUT_MS = 10_000;

/** A SharedArrayBuffer made with maxByteLength (ES2024), as Bun provides it. */
export type GrowableBuffer = SharedArrayBuffer & { readonly maxByteLength: number; grow(bytes: number): void };

/** Grows `buf` to hold `bytes` (doubling, up to its maximum); false when `bytes` is over the maximum. */
export function growFor(buf: GrowableBuffer, bytes: number): boolean {
  if (bytes > buf.maxByteLength) return false;
  if (bytes > buf.byteLength) buf.grow(Math.min(buf.maxByteLength, Math.max(bytes, buf.byteLength * 2)));
  return true;
}

export class ParserLimitError extends Error {}
/** The worker is not running: never started (a caller that skipped parserReady(), a bug), or being replaced. */
export class ParserUnavailableError extends Error {}

interface Link {
  worker: Worker;
  ctl: Int32Array;
  sab: GrowableBuffer;
  /** A view of sab that follows its length as it grows. */
  data: Uint8Array;
}

let link: Link | null = null;
let loading: Promise<void> | null = null;
let started = false;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function start(): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const worker = new Worker(new URL("./parser-worker.ts", import.meta.url).href);
    const ctl = new Int32Array(new SharedArrayBuffer(C.slots * 4));
    const sab = new (SharedArrayBuffer as unknown as new (bytes: number, o: { maxByteLength: number }) => GrowableBuffer)(DATA_INITIAL_BYTES, { maxByteLength: DATA_MAX_BYTES });
    const fail = (e: unknown) => {
      loading = null;
      link = null;
      worker.terminate();
      reject(e instanceof Error ? e : new Error(String((e as ErrorEvent)?.message ?? e)));
    };
    worker.onerror = fail;
    worker.onmessage = (e: MessageEvent) => {
      if (e.data === "loaded") return worker.postMessage({ ctl, sab });
      if (e.data === "ready") {
        worker.onerror = () => lost(worker);
        link = { worker, ctl, sab, data: new Uint8Array(sab) };
        return resolve();
      }
      if (typeof e.data === "object" && e.data?.error) fail(new Error(e.data.error));
    };
    worker.unref();
  });
}

/** The running worker died or stopped answering: it is dropped and a new one started. */
function lost(worker: Worker) {
  if (link?.worker !== worker) return;
  worker.terminate();
  link = null;
  loading = null;
  void parserReady().catch(() => {});
}

/** Starts the parser's worker once; parseStatements needs it. Resolves at once when it is running. */
export function parserReady(): Promise<void> {
  started = true;
  loading ??= start();
  return loading;
}

export function parserLoaded(): boolean {
  return link !== null;
}

/** parserReady() was called: a ParserUnavailableError since then is the worker being replaced, not a bug. */
export function parserStarted(): boolean {
  return started;
}

/** The statements of `sql` as the Postgres parser reads them; throws the parser's error (or ParserLimitError). */
export function parse(sql: string): Array<{ stmt: Record<string, unknown> }> {
  const l = link;
  if (!l) throw new ParserUnavailableError(started ? "the Postgres parser is restarting" : "the Postgres parser is not running: await parserReady() first");
  const { ctl } = l;
  const bytes = Buffer.byteLength(sql);
  if (!growFor(l.sab, bytes)) throw new ParserLimitError(`a statement of ${bytes} bytes is over the parser's ${DATA_MAX_BYTES}-byte buffer`);
  ctl[C.length] = encoder.encodeInto(sql, l.data).written;
  Atomics.store(ctl, C.done, 0);
  Atomics.store(ctl, C.request, 1);
  Atomics.notify(ctl, C.request);
  if (Atomics.wait(ctl, C.done, 0, CALL_TIMEOUT_MS) === "timed-out") {
    lost(l.worker);
    throw new ParserUnavailableError(`the Postgres parser did not answer within ${CALL_TIMEOUT_MS} ms: restarting it`);
  }
  const status = ctl[C.status];
  const text = decoder.decode(l.data.slice(0, ctl[C.length]));
  if (status === C.ok) return JSON.parse(text);
  if (status === C.tooBig) throw new ParserLimitError(text);
  throw new Error(text);
}
