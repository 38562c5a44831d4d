// The statements the pooler prepares on an origin connection under their shared names: an LRU per connection
// with each copy's Parse sequence, hidden Parses and Closes whose answers the relay swallows (server.ts).
import { encodeClose, encodeParse } from "../../protocol/frontend.ts";
import { EXPECT_CLOSE_HIDDEN, K } from "./expect.ts";
import type { Server } from "./server.ts";

/** A statement as the origin prepares it: its shared name there, its text and parameter types, its Parse once built. */
export interface OriginStatement {
  serverName: string;
  query: string;
  paramTypes: number[];
  parse: Uint8Array | null;
  /** nextPrepareSeq() when the client Parsed it: an origin copy older than this is prepared again. */
  parsedAt: number;
}

let prepareSeq = 0;
/** A process-wide sequence ordering client Parses and origin prepares. */
export const nextPrepareSeq = () => ++prepareSeq;

/** Queues a hidden Close of a statement (its CloseComplete is swallowed) and forgets it on the connection. */
export function closePrepared(s: Server, name: string, emit: (b: Uint8Array) => void) {
  s.prepared.delete(name);
  emit(encodeClose({ kind: "S", name }));
  s.push(EXPECT_CLOSE_HIDDEN);
}

export function evictPrepared(s: Server, max: number, emit: (b: Uint8Array) => void) {
  while (s.prepared.size >= max) {
    closePrepared(s, s.prepared.keys().next().value as string, emit);
  }
}

/**
 * Makes sure a connection has a statement prepared under its shared name, by a Parse newer than the client's:
 * refreshes its LRU place, or queues a hidden Parse (after closing an older copy and evicting past `max`) whose
 * answer the relay swallows.
 */
export function prepareOn(s: Server, stmt: OriginStatement, max: number, emit: (b: Uint8Array) => void) {
  const at = s.prepared.get(stmt.serverName);
  if (at !== undefined) {
    s.prepared.delete(stmt.serverName);
    if (at > stmt.parsedAt) {
      s.prepared.set(stmt.serverName, at);
      return;
    }
    // Made before the client's Parse: possibly against an older schema (another client's table of that name).
    closePrepared(s, stmt.serverName, emit);
  }
  evictPrepared(s, max, emit);
  stmt.parse ??= encodeParse({ name: stmt.serverName, query: stmt.query, paramTypes: stmt.paramTypes });
  emit(stmt.parse);
  s.prepared.set(stmt.serverName, nextPrepareSeq());
  s.push({ k: K.ParseHidden, name: stmt.serverName });
}
