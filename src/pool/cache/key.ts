// The key of a cached answer: the statement part (database, user, session settings, parameter types, SQL) and
// the parameter part (a Bind's bytes as sent, or decoded parameters and formats).

export interface QueryKey {
  database: string;
  user: string;
  sql: string;
  params?: Array<Uint8Array | null>;
  paramFormats?: number[];
  resultFormats?: number[];
  paramTypes?: number[];
  /** Session settings that change results (TimeZone, DateStyle, search_path, SETs). */
  session?: string;
  /**
   * Instead of params and formats: a client Bind's bytes after the statement name (parameter formats, values,
   * result formats), as sent; the pooler keys extended-protocol statements by them without decoding.
   */
  bindTail?: Uint8Array;
  /** What else shapes the recorded answer (the pooler's "with or without RowDescription"). */
  variant?: string;
  /** cacheKey(this), when the caller has it already. */
  id?: string;
}

const latin1 = new TextDecoder("latin1");
const part = (s: string) => s.length + ":" + s;

/**
 * The statement part of a key: every part length-prefixed, so no two different keys read the same. Exact
 * rather than hashed: a hash collision would serve one query's rows for another.
 */
export function keyPrefix(k: QueryKey): string {
  return part(k.database) + part(k.user) + part(k.session ?? "") + part((k.paramTypes ?? []).join(",")) + part(k.sql);
}

/** The parameter part of a key; `bindTail` bytes are kept as they are, one character per byte. */
export function keyTail(k: Pick<QueryKey, "variant" | "bindTail" | "params" | "paramFormats" | "resultFormats">): string {
  const v = part(k.variant ?? "");
  if (k.bindTail) return v + "B" + latin1.decode(k.bindTail);
  let s = v + "P" + part((k.paramFormats ?? []).join(",")) + part((k.resultFormats ?? []).join(","));
  for (const p of k.params ?? []) s += p === null ? "N" : part(latin1.decode(p));
  return s;
}

export const cacheKey = (k: QueryKey): string => k.id ?? keyPrefix(k) + keyTail(k);
