// The query cache on the pooler's query path: the classifier (classify.ts) and the cache (query-cache.ts) put
// together with miss admission, the recorder of answers streaming past, the wire forms of a cached answer, and
// a cache load on a pooled connection: one statement, its response recorded (bounded by
// KVDRIVE_QUERY_CACHE_MAX_RESULT_BYTES) up to ReadyForQuery.
import type { Config } from "../../config.ts";
import type { Clock } from "../../clock.ts";
import type { Registry } from "../../metrics/registry.ts";
import { encodeBind, encodeDescribe, encodeExecute, encodeParse, encodeQuery, SYNC } from "../../protocol/frontend.ts";
import { B, BIND_COMPLETE, PARSE_COMPLETE, READY_IDLE } from "../../protocol/backend.ts";
import { createFrames } from "../../protocol/frames.ts";
import { K } from "../server/expect.ts";
import { replaySql } from "../server/replay.ts";
import type { Owner, Server } from "../server/server.ts";
import type { Pool } from "../pool.ts";
import { classify, type Classification } from "./classify.ts";
import { createQueryCache } from "./query-cache.ts";

export type QueryCache = ReturnType<typeof createQueryCache>;

export interface CachePath {
  classify(sql: string): Classification;
  cache: QueryCache;
  /** Whether a miss of this key is worth recording now (see createAdmission); hits and misses are counted by it. */
  admission: Admission;
}

export interface Admission {
  hit(): void;
  /** A miss of `id`: true to record it, false to let it pass through like an uncached read. */
  admit(id: string): boolean;
}

/**
 * Admission of misses into the query cache, as TinyLFU's doorkeeper does it: while at least one read in ten is a
 * hit, every miss is recorded (a read repeated once is a hit the second time). When nearly nothing hits (a scan of
 * keys each read once), recording, storing and evicting would make every read slower for no later hit: then a
 * miss is recorded only the second time its key is seen recently. The counts decay, so the mode follows the load.
 */
export function createAdmission(o: { window?: number; minHitRatio?: number; slots?: number } = {}): Admission {
  // Short enough that a scan following a hot phase stops being recorded within a few thousand reads.
  const window = o.window ?? 1_000;
  const minHitRatio = o.minHitRatio ?? 0.1;
  // 2 MiB: keys seen once recently, by a 32-bit hash; a key that collides waits for one more sighting.
  const seen = new Uint32Array(o.slots ?? 1 << 19);
  const mask = seen.length - 1;
  let hits = 0;
  let lookups = 0;
  const decay = () => {
    if (lookups < 2 * window) return;
    hits /= 2;
    lookups /= 2;
  };
  return {
    hit() {
      hits++;
      lookups++;
      decay();
    },
    admit(id) {
      lookups++;
      decay();
      if (lookups < window || hits >= minHitRatio * lookups) return true;
      const h = Bun.hash.crc32(id) || 1; // a number: no BigInt per miss
      const slot = h & mask;
      if (seen[slot] === h) return true;
      seen[slot] = h;
      return false;
    },
  };
}

/** The query cache and what the pooler's query path needs with it (no I/O until a statement is run). */
export function createCachePath(opts: { config: Config; clock: Clock; metrics: Registry; volatility: (database: string, functions: string[]) => Promise<boolean> }): CachePath {
  const cache = createQueryCache({ config: opts.config, clock: opts.clock, metrics: opts.metrics, volatility: opts.volatility });
  return { classify, cache, admission: createAdmission() };
}

/**
 * What the cache keeps of an answer streaming past: the RowDescription, rows and CommandComplete, up to the
 * ReadyForQuery. Not usable (result() null) after an error, COPY, a suspended portal, more than maxBytes, or a
 * ReadyForQuery inside a transaction. The result is those messages in one buffer (one element): a cache of many
 * small answers then holds one ArrayBuffer per entry, not one per message, which is what the garbage collector
 * pays for (a miss-only workload filled 64 MiB with 235,000 buffers and 400 ms full collections).
 */
export function createAnswerRecorder(maxBytes: number) {
  const frames = createFrames(maxBytes + 1024);
  const messages: Uint8Array[] = [];
  let bytes = 0;
  let usable = true;
  let ended = false;
  const onMessage = (type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean => {
    if (type === B.ReadyForQuery) {
      ended = true;
      if (body[0] !== 0x49) usable = false;
      return true;
    }
    if (type === B.ErrorResponse || type === B.CopyInResponse || type === B.CopyOutResponse || type === B.CopyBothResponse || type === B.PortalSuspended) usable = false;
    if (type === B.ParameterStatus || type === B.NoticeResponse || type === B.NotificationResponse || type === B.ParseComplete || type === B.BindComplete) return true;
    if (usable) messages.push(buf.slice(at, at + 5 + body.length));
    return true;
  };
  return {
    /** Takes answer bytes as they pass; true once the answer is over (its ReadyForQuery, or past maxBytes). */
    feed(b: Uint8Array): boolean {
      if (ended) return true;
      bytes += b.length;
      if (bytes > maxBytes) {
        usable = false;
        ended = true;
        messages.length = 0;
        return true;
      }
      try {
        frames.push(b, onMessage);
      } catch {
        // One message past the bound (a row over maxBytes whose header came in a small chunk): not cached,
        // and nothing else; the answer itself streams on to its client and the connection stays.
        usable = false;
        ended = true;
        messages.length = 0;
      }
      return ended;
    },
    abandon() {
      usable = false;
      ended = true;
    },
    result: (): Uint8Array[] | null => (usable && ended ? (messages.length > 1 ? [Buffer.concat(messages)] : messages) : null),
  };
}

/** The recording of a cacheable miss that streams to its client: where the answer goes when it is over. */
export type Recording = { rec: { done(messages: Uint8Array[] | null): void }; answer: ReturnType<typeof createAnswerRecorder> };

/** Wire forms of a cached answer (QueryCache.reply keeps one of each built): see REPLY_BUILDERS. */
export const REPLY_SIMPLE = 0;
export const REPLY_DESCRIBED = 1;
export const REPLY_BOUND = 2;
/** Added to REPLY_DESCRIBED or REPLY_BOUND: the same answer after a ParseComplete (an unnamed Parse came first). */
export const REPLY_PARSED = 2;
const simpleReply = (ms: Uint8Array[]) => Buffer.concat([...ms, READY_IDLE]);
const describedReply = (ms: Uint8Array[]) => Buffer.concat([BIND_COMPLETE, ...ms, READY_IDLE]);
/** Recorded messages (one buffer or several) without the RowDescription they start with, if any. */
const withoutRowDescription = (m: Uint8Array) => (m[0] === B.RowDescription ? m.subarray(1 + new DataView(m.buffer, m.byteOffset).getUint32(1)) : m);
const boundReply = (ms: Uint8Array[]) => Buffer.concat([BIND_COMPLETE, ...ms.map(withoutRowDescription), READY_IDLE]);
/**
 * Builders by form: to a simple Query; to Bind/Execute/Sync with and without a Describe of the portal (recorded
 * answers always start with the RowDescription); and those two after a ParseComplete.
 */
export const REPLY_BUILDERS: Array<(messages: Uint8Array[]) => Uint8Array> = [
  simpleReply,
  describedReply,
  boundReply,
  (ms) => Buffer.concat([PARSE_COMPLETE, describedReply(ms)]),
  (ms) => Buffer.concat([PARSE_COMPLETE, boundReply(ms)]),
];

function acquire(pool: Pool): Promise<Server | null> {
  return new Promise((resolve) => pool.acquire({ grant: resolve, fail: () => resolve(null) }));
}

/**
 * Runs one statement as a simple Query on a pooled connection with the given session parameters, and returns
 * its response messages without ReadyForQuery; null when it failed, was not a plain result, or exceeded
 * maxBytes (then the caller runs it the ordinary way, streamed).
 */
export async function recordQuery(
  pool: Pool,
  params: Map<string, string>,
  sets: Map<string, string>,
  sql: string,
  /** Parameters: text values, or a client's own Bind message (any formats) with its parameter types. */
  bindParams: Array<Uint8Array | null> | { bind: Uint8Array; paramTypes: number[] } | null,
  maxBytes: number,
  /** Why running it may change the session in ways the pooler does not track: the connection is reset after. */
  untracked?: string,
): Promise<Uint8Array[] | null> {
  const server = await acquire(pool);
  if (!server) return null;
  if (untracked) server.dirty ??= untracked;
  return new Promise((resolve) => {
    const answer = createAnswerRecorder(maxBytes);
    let done = false;
    const finish = (reusable: boolean) => {
      if (done) return;
      done = true;
      server.owner = null;
      pool.release(server, reusable);
      resolve(answer.result());
    };
    const owner: Owner = {
      send(b) {
        answer.feed(b);
      },
      backpressured: () => false,
      parameterStatus() {},
      idle: () => finish(true),
      completed() {},
      planChanged: () => null,
      serverClosed() {
        answer.abandon();
        finish(false);
      },
      serverDrained() {},
    };
    server.owner = owner;
    const replay = replaySql(server, params, sets);
    server.sig = "";
    if (replay) {
      server.conn.write(encodeQuery(replay));
      server.push({ k: K.Replay });
    }
    if (bindParams === null) {
      server.conn.write(encodeQuery(sql));
      server.push({ k: K.Query });
      return;
    }
    // With parameters: the unnamed statement, text results, Describe for the RowDescription.
    server.unnamedOwner = 0;
    const own = !Array.isArray(bindParams);
    server.conn.write(
      Buffer.concat([
        encodeParse({ name: "", query: sql, paramTypes: own ? bindParams.paramTypes : [] }),
        own ? bindParams.bind : encodeBind({ portal: "", statement: "", paramFormats: [], params: bindParams, resultFormats: [] }),
        encodeDescribe({ kind: "P", name: "" }),
        encodeExecute(""),
        SYNC,
      ]),
    );
    for (const k of [K.Parse, K.Bind, K.Describe, K.Execute, K.Sync]) server.push({ k });
  });
}
