// Read coalescing: single-key reads that arrive while every read slot is busy are answered by one multi-key
// query per namespace when a slot frees up. A lone read goes out at once; under load Postgres sees a few
// `key = ANY(...)` queries instead of one query per request. Every read in a query was asked for before the
// query was sent, so no answer is older than a write acknowledged before its read began.
import type { StoredEntry } from "../storage/entry.ts";
import type { Backend } from "../storage/backend.ts";

export interface ReadCoalescer {
  get(ns: string, key: Uint8Array): Promise<StoredEntry | null>;
}

interface Pending {
  key: Uint8Array;
  resolve(e: StoredEntry | null): void;
  reject(e: unknown): void;
}

/** Most keys in one coalesced query; more waiting readers go in the next one. */
const MAX_KEYS_PER_QUERY = 256;

export function createReadCoalescer(backend: Pick<Backend, "get" | "getMany">, concurrency: number): ReadCoalescer {
  let inFlight = 0;
  // Insertion-ordered: namespaces are served in the order their first reader arrived.
  const waiting = new Map<string, Pending[]>();

  function settle<T>(p: Promise<T>, ok: (v: T) => void, fail: (e: unknown) => void) {
    p.then(ok, fail).finally(() => {
      inFlight--;
      next();
    });
  }

  function next() {
    while (inFlight < concurrency && waiting.size) {
      const [ns, list] = waiting.entries().next().value as [string, Pending[]];
      const batch = list.length <= MAX_KEYS_PER_QUERY ? list : list.splice(0, MAX_KEYS_PER_QUERY);
      if (batch === list) waiting.delete(ns);
      inFlight++;
      settle(
        backend.getMany(ns, batch.map((p) => p.key)),
        (found) => batch.forEach((p, i) => p.resolve(found[i]!)),
        (e) => batch.forEach((p) => p.reject(e)),
      );
    }
  }

  return {
    get(ns, key) {
      if (inFlight < concurrency && waiting.size === 0) {
        inFlight++;
        return new Promise((resolve, reject) => settle(backend.get(ns, key), resolve, reject));
      }
      return new Promise((resolve, reject) => {
        const list = waiting.get(ns);
        if (list) list.push({ key, resolve, reject });
        else waiting.set(ns, [{ key, resolve, reject }]);
        if (inFlight < concurrency) next();
      });
    },
  };
}
