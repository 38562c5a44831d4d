// Splits a byte stream into protocol messages by their length field, holding back only an incomplete tail.
// Callers get (type, body) views into the chunk they passed in; nothing is copied for complete messages.
import { ProtocolError } from "../errors.ts";

export interface Frames {
  /**
   * Feeds a chunk; calls onMessage for each complete message, with `at` the offset of its type byte in `buf`.
   * Throws ProtocolError (54000 for oversized) when a length is invalid. onMessage returning false stops before
   * that message and holds it and the rest until resume (used while waiting for an origin connection).
   */
  push(chunk: Uint8Array, onMessage: OnMessage): void;
  /** Bytes held back (an incomplete message or unprocessed messages after a stop). */
  pending(): number;
  /** Re-runs held messages after a stop. */
  resume(onMessage: OnMessage): void;
  /** Puts complete messages back in front of everything not yet processed (the next resume runs them first). */
  unshift(bytes: Uint8Array): void;
  /** Changes the bound on one message's length (smaller before login, larger after). */
  limit(maxBytes: number, variable: string): void;
}

type OnMessage = (type: number, body: Uint8Array, buf: Uint8Array, at: number) => boolean | void;

/** maxBytes bounds one message's length; startup packets (no type byte) are split by readStartup instead. */
export function createFrames(maxBytes: number, variable = "KVDRIVE_PG_MAX_MESSAGE_BYTES"): Frames {
  // An incomplete message: `acc` is allocated at its full size once the header is known, so a large
  // message arriving in many chunks is copied once, not re-joined per chunk.
  let acc: Uint8Array | null = null;
  let filled = 0;
  let held: Uint8Array | null = null; // complete messages left after a stop
  const lengthAt = (buf: Uint8Array, at: number) => {
    const len = ((buf[at + 1]! << 24) | (buf[at + 2]! << 16) | (buf[at + 3]! << 8) | buf[at + 4]!) >>> 0;
    if (len < 4) throw new ProtocolError(`invalid message length ${len} for message type ${buf[at]}`);
    if (len > maxBytes) throw new ProtocolError(`message of ${len} bytes exceeds the limit of ${maxBytes} bytes (${variable})`, "54000");
    return len;
  };
  const run = (buf: Uint8Array, onMessage: OnMessage) => {
    let at = 0;
    const n = buf.length;
    while (n - at >= 5) {
      const len = lengthAt(buf, at);
      if (n - at < len + 1) break;
      if (onMessage(buf[at]!, buf.subarray(at + 5, at + 1 + len), buf, at) === false) {
        held = buf.slice(at);
        return false;
      }
      at += len + 1;
    }
    if (at < n) {
      const rest = buf.subarray(at);
      acc = new Uint8Array(rest.length >= 5 ? lengthAt(rest, 0) + 1 : 5);
      acc.set(rest);
      filled = rest.length;
    }
    return true;
  };
  const frames: Frames = {
    push(chunk, onMessage) {
      if (held) {
        // Still stopped: keep appending (the caller bounds how much it lets in while stopped).
        const joined = new Uint8Array(held.length + chunk.length);
        joined.set(held);
        joined.set(chunk, held.length);
        held = joined;
        return;
      }
      let off = 0;
      while (acc) {
        const take = Math.min(acc.length - filled, chunk.length - off);
        acc.set(chunk.subarray(off, off + take), filled);
        filled += take;
        off += take;
        if (filled < acc.length) return;
        if (acc.length === 5) {
          // Header complete: now the full size is known.
          const full = new Uint8Array(lengthAt(acc, 0) + 1);
          full.set(acc);
          acc = full;
          if (filled < acc.length) continue;
        }
        const msg = acc;
        acc = null;
        filled = 0;
        if (onMessage(msg[0]!, msg.subarray(5), msg, 0) === false) {
          held = off < chunk.length ? Buffer.concat([msg, chunk.subarray(off)]) : msg;
          return;
        }
      }
      if (off < chunk.length) run(off ? chunk.subarray(off) : chunk, onMessage);
    },
    pending: () => (held?.length ?? 0) + filled,
    limit(max, name) {
      maxBytes = max;
      variable = name;
    },
    unshift(bytes) {
      const parts = [bytes];
      if (held) parts.push(held);
      else if (acc) parts.push(acc.subarray(0, filled));
      held = Buffer.concat(parts);
      acc = null;
      filled = 0;
    },
    resume(onMessage) {
      const h = held;
      held = null;
      if (h) run(h, onMessage);
    },
  };
  return frames;
}

/**
 * Startup-phase packets: an int32 length including itself, then the body. Returns [body, consumed] or null.
 * An invalid length closes without an answer, as Postgres does: that is what a Terminate sent before the
 * StartupMessage (node-postgres' connect(); end()) or a client of another protocol looks like.
 */
export function readStartup(buf: Uint8Array, maxBytes: number): [Uint8Array, number] | null {
  if (buf.length < 4) return null;
  const len = ((buf[0]! << 24) | (buf[1]! << 16) | (buf[2]! << 8) | buf[3]!) >>> 0;
  if (len < 8 || len > maxBytes) throw new ProtocolError(`invalid length of startup packet: ${len} (must be 8..${maxBytes})`, "08P01", "close");
  if (buf.length < len) return null;
  return [buf.subarray(4, len), len];
}
