// Cross-instance cache invalidation over Postgres LISTEN/NOTIFY on every cluster. After a write commits, the
// writing instance announces the namespace and the hashes of the keys it changed (cache.ts keyHash) on one
// cluster (the one it wrote to, falling back to any other); every instance listens on every cluster, so it hears
// an announcement whichever cluster carried it, and evicts those keys. Announcements go out together, one send
// at a time and at most one every MIN_SEND_INTERVAL_MS, HASHES_PER_MESSAGE per NOTIFY (Postgres refuses payloads
// of 8,000 bytes or more), all of one cluster's in one statement; a namespace with more than WHOLE_NAMESPACE_AT changed keys is named whole.
//
// A listening connection that comes back after a loss may have missed messages: onResync then evicts
// everything. So does a cluster whose first LISTEN succeeds only after start. Until a lost connection is back,
// staleness across instances falls back to the cache TTL.
//
// Anyone who can connect may NOTIFY: payloads are validated and bounded, and a bad one is counted and ignored.
// One channel and one JSON message format ({i, t, n, h}) on every cluster.
import { SQL } from "bun";
import postgres from "postgres";
import { createRegistry, LATENCY_BUCKETS_SECONDS, type Registry } from "../metrics/registry.ts";
import { keyHash } from "./cache.ts";

export const CHANNEL = "kvdrive_kv_invalidate";
/** Hashes per NOTIFY: at most 11 characters each in JSON keeps a payload under 7,000 bytes. */
export const HASHES_PER_MESSAGE = 600;
/** A namespace with more changed keys than this in one turn is evicted whole. */
export const WHOLE_NAMESPACE_AT = 20_000;
const MAX_NAMESPACE_LENGTH = 128;
const MAX_INSTANCE_ID_LENGTH = 64;
const MAX_PAYLOAD_LENGTH = 8000;
const DEFAULT_START_TIMEOUT_MS = 5000;
/**
 * Sends start at least this far apart: under load announcements gather for up to this long instead of going out
 * once per round trip. Every NOTIFY costs this process a write on its sending connection and a read of its own
 * message coming back on its LISTEN connection; at one per round trip (700 a second at 16 connections) that was
 * 40-60 µs of CPU per PUT. A lone write after a quiet spell still goes out at once.
 */
const MIN_SEND_INTERVAL_MS = 10;

export interface Invalidation {
  /**
   * Announces that these keys of ns changed (call after the write commits). Sent at the end of this event-loop
   * turn (or MIN_SEND_INTERVAL_MS after the previous send), together with the other announcements meanwhile, on
   * urls[cluster] (default 0) or, if that fails, on the next cluster that takes it. Never rejects: a message no cluster took is counted and logged.
   */
  announce(ns: string, keys: readonly (string | Uint8Array)[], cluster?: number): Promise<void>;
  /** Sends what is pending, then closes every connection. Later announcements are dropped. */
  close(): Promise<void>;
}

export interface InvalidationOptions {
  /** Every Postgres cluster instances share; each gets one LISTEN connection and one for sending. */
  urls: readonly string[];
  /** Unique per process: its own messages are ignored. At most 64 characters. */
  instanceId: string;
  channel?: string;
  /** Evicts these key hashes of ns, or the whole namespace ("all"). Returns how many entries went. */
  onEvict(ns: string, hashes: number[] | "all"): number | void;
  /** LISTEN on urls[cluster] was (re)established after start: messages may be missing, evict everything. */
  onResync(cluster: number): void;
  metrics?: Registry;
  log?: (msg: string) => void;
  /** How long start waits for each cluster's first LISTEN; a slower cluster is listened to when it answers. */
  startTimeoutMs?: number;
}

interface Message {
  /** Sender instance. */
  i: string;
  /** Sent at (ms since the epoch, the sender's clock). */
  t: number;
  n: string;
  /** Key hashes, or 1 for the whole namespace. */
  h: number[] | 1;
}

const isHash = (h: unknown) => Number.isInteger(h) && (h as number) >= 0 && (h as number) <= 0xffffffff;

export function parseMessage(payload: string): Message | null {
  if (payload.length > MAX_PAYLOAD_LENGTH) return null;
  let m: unknown;
  try {
    m = JSON.parse(payload);
  } catch {
    return null;
  }
  if (typeof m !== "object" || m === null) return null;
  const x = m as Partial<Message>;
  if (typeof x.i !== "string" || x.i.length > MAX_INSTANCE_ID_LENGTH || !Number.isFinite(x.t)) return null;
  if (typeof x.n !== "string" || x.n.length === 0 || x.n.length > MAX_NAMESPACE_LENGTH) return null;
  if (x.h === 1) return x as Message;
  if (!Array.isArray(x.h) || x.h.length > HASHES_PER_MESSAGE || !x.h.every(isHash)) return null;
  return x as Message;
}

/** The payloads announcing these changes of one namespace. */
export function encodeMessages(instanceId: string, t: number, ns: string, hashes: readonly number[]): string[] {
  if (hashes.length > WHOLE_NAMESPACE_AT) return [JSON.stringify({ i: instanceId, t, n: ns, h: 1 })];
  const out: string[] = [];
  for (let i = 0; i < hashes.length; i += HASHES_PER_MESSAGE) out.push(JSON.stringify({ i: instanceId, t, n: ns, h: hashes.slice(i, i + HASHES_PER_MESSAGE) }));
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export async function startInvalidation(opts: InvalidationOptions): Promise<Invalidation> {
  if (opts.urls.length === 0) throw new Error("invalidation: no Postgres cluster to listen on");
  if (opts.instanceId.length === 0 || opts.instanceId.length > MAX_INSTANCE_ID_LENGTH) throw new Error(`invalidation: instanceId of length ${opts.instanceId.length} is not within 1..${MAX_INSTANCE_ID_LENGTH}`);
  const channel = opts.channel ?? CHANNEL;
  const m = opts.metrics ?? createRegistry();
  const sent = m.counter("kvdrive_invalidations_sent_total", "Invalidation messages sent to other instances.");
  const sendErrors = m.counter("kvdrive_invalidation_send_errors_total", "Invalidation messages no cluster took (others stay stale up to the cache TTL).");
  const received = m.counter("kvdrive_invalidations_received_total", "Invalidation messages received from other instances.");
  const evicted = m.counter("kvdrive_invalidation_keys_evicted_total", "Cache entries evicted on other instances' invalidations.");
  const malformed = m.counter("kvdrive_invalidations_malformed_total", "Notifications on the channel that were not valid invalidations (ignored).");
  const resyncs = m.counter("kvdrive_invalidation_resyncs_total", "Times a listening connection came back after a loss and the cache was cleared.");
  const delay = m.histogram("kvdrive_invalidation_delay_seconds", "Cross-instance staleness: from a write's announcement to its eviction elsewhere.", LATENCY_BUCKETS_SECONDS);

  const appName = `kvdrive-invalidation-${opts.instanceId}`.slice(0, 63);
  // Listening needs Postgres.js (Bun.SQL has no LISTEN); sending goes through Bun.SQL, whose native client costs
  // a fraction of Postgres.js' socket writes (measured: about 1 ms of CPU per send through Postgres.js, which
  // at 100 sends a second was 15 µs of every PUT at 16 connections).
  const sqls = opts.urls.map((url) => postgres(url, { max: 1, idle_timeout: 0, connect_timeout: 5, fetch_types: false, onnotice: () => {}, connection: { application_name: appName } }));
  const senders = opts.urls.map((url) => new SQL(url, { max: 1, idleTimeout: 0, connectionTimeout: 5 }));
  // Our own messages come back on the channel: recognised by their first bytes, never parsed.
  const ownPrefix = JSON.stringify({ i: opts.instanceId }).slice(0, -1) + ",";

  function receive(payload: string) {
    if (payload.startsWith(ownPrefix)) return;
    const msg = parseMessage(payload);
    if (!msg) {
      malformed.inc();
      return;
    }
    if (msg.i === opts.instanceId) return;
    received.inc();
    delay.observe(Math.max(0, Date.now() - msg.t) / 1000);
    try {
      const n = opts.onEvict(msg.n, msg.h === 1 ? "all" : msg.h);
      if (typeof n === "number" && n > 0) evicted.inc(undefined, n);
    } catch (e) {
      opts.log?.(`invalidation: eviction failed: ${(e as Error).message}`);
    }
  }

  // Postgres.js re-issues LISTEN on a new connection after a loss and calls onListen again each time.
  let started = false;
  const onListen = (cluster: number) => {
    if (!started) return;
    resyncs.inc();
    opts.log?.(`invalidation: listening on cluster ${cluster} again, cache cleared`);
    try {
      opts.onResync(cluster);
    } catch (e) {
      opts.log?.(`invalidation: resync failed: ${(e as Error).message}`);
    }
  };
  const timeout = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const up = await Promise.all(
    sqls.map((sql, c) =>
      withTimeout(
        sql.listen(channel, receive, () => onListen(c)),
        timeout,
      ).then(
        () => true,
        (e) => {
          opts.log?.(`invalidation: not listening on cluster ${c} yet (${(e as Error).message}); retrying`);
          return false;
        },
      ),
    ),
  );
  started = true;
  if (!up.some(Boolean)) opts.log?.("invalidation: no cluster listened to yet; other instances' writes stay cached up to the TTL");

  /** Sends one turn's payloads of one cluster in a single statement; on failure tries the other clusters. */
  async function send(cluster: number, payloads: string[]) {
    const order = [cluster, ...sqls.keys()].filter((c, i, all) => all.indexOf(c) === i);
    for (const c of order) {
      try {
        const sql = senders[c]!;
        if (payloads.length === 1) await sql`SELECT pg_notify(${channel}, ${payloads[0]!})`;
        else await sql`SELECT pg_notify(${channel}, p) FROM unnest(${sql.array(payloads, "text")}) AS p`;
        sent.inc(undefined, payloads.length);
        return;
      } catch (e) {
        opts.log?.(`invalidation: cluster ${c} did not take ${payloads.length} message(s): ${(e as Error).message}`);
      }
    }
    sendErrors.inc(undefined, payloads.length);
  }

  let pending = new Map<number, Map<string, Set<number>>>();
  let turn: { done: Promise<void>; resolve(): void } | null = null;
  const inFlight = new Set<Promise<void>>();
  let closed = false;
  let lastSend = -Infinity;
  /** Schedules the next flush: at once after a quiet spell, else MIN_SEND_INTERVAL_MS after the last send began. */
  function later() {
    const wait = lastSend + MIN_SEND_INTERVAL_MS - performance.now();
    if (wait <= 0) setImmediate(flush);
    else setTimeout(flush, wait);
  }

  function flush() {
    const batch = pending;
    const current = turn;
    pending = new Map();
    turn = null;
    if (!current) return;
    lastSend = performance.now();
    const t = Date.now();
    const sends: Promise<void>[] = [];
    for (const [cluster, byNs] of batch) {
      const payloads: string[] = [];
      for (const [ns, hs] of byNs) payloads.push(...encodeMessages(opts.instanceId, t, ns, [...hs]));
      sends.push(send(cluster, payloads));
    }
    const all = Promise.all(sends).then(() => current.resolve());
    inFlight.add(all);
    void all.finally(() => {
      inFlight.delete(all);
      // Announcements made meanwhile waited for this send: they go together now.
      if (turn && inFlight.size === 0 && !closed) later();
    });
  }

  return {
    announce(ns, keys, cluster = 0) {
      if (ns.length === 0 || ns.length > MAX_NAMESPACE_LENGTH) throw new RangeError(`invalidation: namespace id of length ${ns.length} is not within 1..${MAX_NAMESPACE_LENGTH}`);
      if (closed || keys.length === 0) return Promise.resolve();
      const c = Number.isInteger(cluster) && cluster >= 0 && cluster < sqls.length ? cluster : 0;
      let byNs = pending.get(c);
      if (!byNs) pending.set(c, (byNs = new Map()));
      let set = byNs.get(ns);
      if (!set) byNs.set(ns, (set = new Set()));
      for (const k of keys) set.add(keyHash(k));
      if (!turn) {
        let resolve!: () => void;
        const done = new Promise<void>((r) => (resolve = r));
        turn = { done, resolve };
        // One send at a time, and none sooner than MIN_SEND_INTERVAL_MS after the last: later turns gather
        // into the next (a NOTIFY per group-commit batch cost kvdrive about 40 µs of CPU per PUT).
        if (inFlight.size === 0) later();
      }
      return turn.done;
    },
    async close() {
      closed = true;
      flush();
      await Promise.all(inFlight);
      await Promise.all([...sqls.map((sql) => sql.end({ timeout: 2 }).catch(() => {})), ...senders.map((sql) => sql.close({ timeout: 2 }).catch(() => {}))]);
    },
  };
}
