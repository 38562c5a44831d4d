// Cross-instance cache invalidation over Postgres LISTEN/NOTIFY. After a write commits, an instance announces
// the namespace and the hashes of the keys it changed (cache.ts keyHash) on a channel of the first cluster;
// every other instance listening there evicts those keys from its read cache. Announcements made within one
// event-loop turn go out together, a few hundred hashes per NOTIFY (payloads stay under Postgres' 8,000 bytes).
// When the listening connection is lost and comes back, messages may have been missed: the cache is cleared.
// Without the channel (the cluster is down), staleness across instances falls back to the cache TTL.
//
// Anyone who can connect may NOTIFY: payloads are validated and bounded, and a bad one is counted and ignored.
import postgres from "postgres";
import type { Registry } from "../metrics/registry.ts";

export const CHANNEL = "kvdrive_kv_invalidate";
/** Hashes per NOTIFY: ~11 characters each in JSON keeps a payload well under 8,000 bytes. */
const HASHES_PER_MESSAGE = 600;
/** A namespace with more changed keys than this in one turn is evicted whole. */
const WHOLE_NAMESPACE_AT = 20_000;

export interface Invalidation {
  /** Queues (ns, key hashes) for announcement; sent at the end of this event-loop turn. */
  announce(ns: string, hashes: readonly number[]): void;
  close(): Promise<void>;
}

export interface InvalidationOptions {
  url: string;
  instanceId: string;
  /** Evict these key hashes of ns, or the whole namespace ("all"). */
  onEvict(ns: string, hashes: number[] | "all"): void;
  /** The channel was (re)established after a loss: evict everything. */
  onResync(): void;
  metrics: Registry;
  log?: (msg: string) => void;
}

interface Message {
  /** Sender instance. */
  i: string;
  /** Sent at (ms since the epoch). */
  t: number;
  n: string;
  /** Key hashes, or 1 for the whole namespace. */
  h: number[] | 1;
}

function parse(payload: string): Message | null {
  if (payload.length > 8000) return null;
  let m: unknown;
  try {
    m = JSON.parse(payload);
  } catch {
    return null;
  }
  const x = m as Partial<Message>;
  if (typeof x !== "object" || x === null || typeof x.i !== "string" || typeof x.t !== "number" || typeof x.n !== "string" || x.n.length === 0 || x.n.length > 128) return null;
  if (x.h === 1) return x as Message;
  if (!Array.isArray(x.h) || x.h.length > HASHES_PER_MESSAGE || !x.h.every((h) => Number.isInteger(h) && h >= 0 && h <= 0xffffffff)) return null;
  return x as Message;
}

export async function startInvalidation(opts: InvalidationOptions): Promise<Invalidation> {
  const m = opts.metrics;
  const sent = m.counter("kvdrive_invalidations_sent_total", "Invalidation messages sent to other instances.");
  const received = m.counter("kvdrive_invalidations_received_total", "Invalidation messages received from other instances.");
  const evicted = m.counter("kvdrive_invalidation_keys_total", "Key hashes received for eviction from other instances.");
  const malformed = m.counter("kvdrive_invalidations_malformed_total", "Notifications on the channel that were not valid invalidations (ignored).");
  const resyncs = m.counter("kvdrive_invalidation_resyncs_total", "Times the channel came back after a loss and the cache was cleared.");
  const lost = m.counter("kvdrive_invalidation_send_errors_total", "Invalidation messages that could not be sent.");
  const delay = m.histogram("kvdrive_invalidation_delay_seconds", "Cross-instance staleness: from a write's announcement to its eviction elsewhere.");

  const sql = postgres(opts.url, { max: 2, idle_timeout: 0, onnotice: () => {} });
  let listens = 0;
  await sql.listen(
    CHANNEL,
    (payload) => {
      const msg = parse(payload);
      if (!msg) {
        malformed.inc();
        return;
      }
      if (msg.i === opts.instanceId) return;
      received.inc();
      delay.observe(Math.max(0, Date.now() - msg.t) / 1000);
      if (msg.h === 1) opts.onEvict(msg.n, "all");
      else {
        evicted.inc(undefined, msg.h.length);
        opts.onEvict(msg.n, msg.h);
      }
    },
    () => {
      // Called on the first listen and again on every reconnect: after a gap, anything may have been missed.
      if (listens++ > 0) {
        resyncs.inc();
        opts.onResync();
      }
    },
  );

  let pending = new Map<string, Set<number>>();
  let scheduled = false;
  let inFlight: Promise<unknown> = Promise.resolve();

  function flush() {
    scheduled = false;
    const batch = pending;
    pending = new Map();
    const t = Date.now();
    const payloads: string[] = [];
    for (const [n, hs] of batch) {
      if (hs.size > WHOLE_NAMESPACE_AT) {
        payloads.push(JSON.stringify({ i: opts.instanceId, t, n, h: 1 }));
        continue;
      }
      const all = [...hs];
      for (let i = 0; i < all.length; i += HASHES_PER_MESSAGE) payloads.push(JSON.stringify({ i: opts.instanceId, t, n, h: all.slice(i, i + HASHES_PER_MESSAGE) }));
    }
    inFlight = Promise.all(
      payloads.map((p) =>
        sql.notify(CHANNEL, p).then(
          () => sent.inc(),
          (e) => {
            lost.inc();
            opts.log?.(`invalidation not sent: ${(e as Error).message}`);
          },
        ),
      ),
    );
  }

  return {
    announce(ns, hashes) {
      let set = pending.get(ns);
      if (!set) pending.set(ns, (set = new Set()));
      for (const h of hashes) set.add(h);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    async close() {
      if (scheduled) flush();
      await inFlight;
      await sql.end({ timeout: 2 });
    },
  };
}
