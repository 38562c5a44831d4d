// The floor for a group-commit PUT on Bun: the least a server can do and still acknowledge a PUT only after its
// row has committed. Bun.serve with no framework, no cache, no metrics, no version clock beyond a counter and
// no key or body validation: check the bearer token, read the body, queue the row, and share the queue among
// up to four in-flight batches (kvdrive's default) that each send kvdrive's own conditional upsert (store.ts's
// statement text) through Bun.SQL, then answer the envelope. The kv-write scenario runs it as its own process,
// next to kvdrive and direct upserts, so what any Bun server could reach on this machine is measured in the same run.
// `bun bench/scenarios/kv-write-floor.ts <listen port> <database url> <namespace id> <token>` prints "ready".
import { SQL } from "bun";
import { upsertText } from "../../src/storage/store.ts";

interface Row {
  key: Uint8Array;
  value: Uint8Array;
  ts: number;
  nonce: number;
  done(e?: unknown): void;
}

const CONCURRENCY = 4;
const SPLIT_MIN_ROWS = 16;
const MAX_ROWS = 512;

if (import.meta.main) {
  const [port, url, ns, token] = [Number(process.argv[2]), process.argv[3]!, process.argv[4]!, process.argv[5]!];
  const sql = new SQL(url, { max: CONCURRENCY, idleTimeout: 0 });
  const ok = JSON.stringify({ success: true, errors: [], messages: [], result: null });
  const json = { "content-type": "application/json" };
  const bearer = `Bearer ${token}`;
  const enc = new TextEncoder();
  let queue: Row[] = [];
  let inFlight = 0;
  let scheduled = false;
  let clock = Date.now() * 1000;

  async function commit(batch: Row[]) {
    batch.sort((a, b) => Buffer.compare(a.key, b.key));
    const params: unknown[] = [];
    for (const r of batch) params.push(ns, r.key, r.value, null, null, r.ts, r.nonce, false, null);
    let err: unknown;
    try {
      await sql.unsafe(upsertText(batch.length), params).values();
    } catch (e) {
      err = e;
    }
    for (const r of batch) r.done(err);
    inFlight--;
    if (queue.length) dispatch();
  }

  function dispatch() {
    scheduled = false;
    while (queue.length && inFlight < CONCURRENCY) {
      const parts = Math.min(CONCURRENCY - inFlight, Math.max(1, Math.floor(queue.length / SPLIT_MIN_ROWS)));
      const n = Math.min(MAX_ROWS, Math.ceil(queue.length / parts));
      const batch = queue.slice(0, n);
      queue = queue.slice(n);
      inFlight++;
      void commit(batch);
    }
  }

  Bun.serve({
    hostname: "127.0.0.1",
    port,
    async fetch(req) {
      if (req.headers.get("authorization") !== bearer) return new Response(null, { status: 401 });
      const u = req.url;
      const key = enc.encode(decodeURIComponent(u.slice(u.lastIndexOf("/") + 1)));
      const value = await req.bytes();
      const failed = await new Promise<unknown>((done) => {
        queue.push({ key, value, ts: clock++, nonce: (Math.random() * 2 ** 31) | 0, done });
        if (!scheduled && inFlight < CONCURRENCY) {
          scheduled = true;
          setImmediate(dispatch);
        }
      });
      return failed ? new Response(null, { status: 503 }) : new Response(ok, { headers: json });
    },
  });
  console.log("ready");
}
