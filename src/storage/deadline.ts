// A bound on how long one storage call may take. A cluster that hangs (stopped, partitioned, out of resources)
// would otherwise hold every request that reaches it until the client gives up: past the bound the call fails
// with StorageUnavailableError, which the KV service answers as 503 "storage is unavailable". The replicated
// backend bounds its own calls (gateway/replicated.ts); this serves the primary on its own and the catalog.
import { StorageUnavailableError } from "../errors.ts";

/** Calls that are bounded: the request path. Purges, namespace drops and walks may rightly run longer. */
const BOUNDED = new Set([
  "get", "getMany", "write", "list", "ping",
  "createNamespace", "listNamespaces", "getNamespace", "renameNamespace", "setNamespaceReplication",
]);

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StorageUnavailableError(`storage: ${what} took longer than KVDRIVE_BACKEND_TIMEOUT_MS=${ms}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A copy of `target` whose request-path methods fail after `ms`; every other property is passed through. */
export function withDeadline<T extends object>(target: T, ms: number): T {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(target)) {
    const v = (target as Record<string, unknown>)[name];
    out[name] = typeof v === "function" && BOUNDED.has(name) ? (...args: unknown[]) => bounded((v as (...a: unknown[]) => Promise<unknown>).apply(target, args), ms, name) : v;
  }
  return out as T;
}
