// Walks a backend byte stream message by message without copying it: for each message the sink decides
// "forward" or "drop" from the type (and the body, for the few types that need it); forwarded bytes come
// out as ranges of the input chunk, so a large result streams through in the chunks it arrived in.

export interface ScanSink {
  /**
   * One message. `body` is given only for types marked in needBody, else null. `inject` writes bytes to the
   * output just before this message. Returns true to forward the message, false to drop it, or END_RANGE
   * (needBody types) to forward it as the last bytes of one forward() call, so the next call starts after it.
   */
  message(type: number, body: Uint8Array | null, inject: (bytes: Uint8Array) => void): boolean | typeof END_RANGE;
  /** Output bytes in order; may be a view into the chunk being fed, valid only during the call. */
  forward(bytes: Uint8Array): void;
}

export const END_RANGE = 2;

export interface Scanner {
  feed(chunk: Uint8Array, sink: ScanSink): void;
  /** True between messages (no partial message held). */
  idle(): boolean;
}

/** needBody[type] = 1 for message types whose body the sink must see (kept small: Z, E, S ...). */
export function createScanner(needBody: Uint8Array): Scanner {
  const hdr = new Uint8Array(5);
  let hdrFilled = 0;
  let remaining = 0; // body bytes of the current message still to come
  let mode: 0 | 1 | 2 = 0; // 0 forward, 1 drop, 2 collect
  let coll: Uint8Array | null = null;
  let collFilled = 0;
  let collType = 0;
  // State of the feed in progress; kept here rather than in per-call closures (this is the hot path).
  let chunk: Uint8Array = hdr;
  let sink: ScanSink | null = null;
  let at = 0;
  let start = 0; // start of the pending forward range
  let curStart = 0;

  const flush = (upto: number) => {
    if (upto > start) {
      sink!.forward(start === 0 && upto === chunk.length ? chunk : chunk.subarray(start, upto));
      start = upto;
    }
  };
  const inject = (b: Uint8Array) => {
    flush(curStart);
    sink!.forward(b);
  };
  const finishCollected = () => {
    const msg = coll!;
    coll = null;
    mode = 0;
    if (sink!.message(collType, msg.subarray(5), inject)) sink!.forward(msg);
  };
  // split: the header came partly from an earlier chunk, so it lives in `hdr`, not in `chunk`.
  const begin = (type: number, bodyLen: number, split: boolean) => {
    if (needBody[type]) {
      flush(curStart);
      coll = new Uint8Array(bodyLen + 5);
      collType = type;
      coll.set(split ? hdr : chunk.subarray(at, at + 5));
      collFilled = 5;
      if (!split) at += 5;
      start = at;
      remaining = bodyLen;
      mode = 2;
      if (remaining === 0) finishCollected();
      return;
    }
    const fwd = sink!.message(type, null, inject);
    if (split) {
      if (fwd) sink!.forward(hdr.slice());
    } else {
      if (!fwd) flush(at);
      at += 5;
      if (!fwd) start = at;
    }
    remaining = bodyLen;
    mode = fwd ? 0 : 1;
  };

  function feed(c: Uint8Array, s: ScanSink) {
    chunk = c;
    sink = s;
    at = 0;
    start = 0;
    curStart = 0;
    const n = c.length;
    while (at < n) {
      if (remaining > 0) {
        const take = Math.min(remaining, n - at);
        if (mode === 2) {
          coll!.set(c.subarray(at, at + take), collFilled);
          collFilled += take;
        }
        at += take;
        remaining -= take;
        if (mode !== 0) start = at;
        if (remaining === 0 && mode === 2) finishCollected();
        continue;
      }
      if (hdrFilled > 0 || n - at < 5) {
        flush(at);
        const take = Math.min(5 - hdrFilled, n - at);
        hdr.set(c.subarray(at, at + take), hdrFilled);
        hdrFilled += take;
        at += take;
        start = at;
        if (hdrFilled < 5) continue;
        hdrFilled = 0;
        curStart = at;
        const len = ((hdr[1]! << 24) | (hdr[2]! << 16) | (hdr[3]! << 8) | hdr[4]!) >>> 0;
        begin(hdr[0]!, Math.max(0, len - 4), true);
        continue;
      }
      const type = c[at]!;
      const len = ((c[at + 1]! << 24) | (c[at + 2]! << 16) | (c[at + 3]! << 8) | c[at + 4]!) >>> 0;
      const bodyLen = Math.max(0, len - 4);
      curStart = at;
      if (needBody[type] && n - at >= bodyLen + 5) {
        // Whole message in this chunk: no copy.
        const fwd = s.message(type, c.subarray(at + 5, at + 5 + bodyLen), inject);
        if (fwd === END_RANGE) {
          at += bodyLen + 5;
          flush(at);
          continue;
        }
        if (!fwd) flush(at);
        at += bodyLen + 5;
        if (!fwd) start = at;
        continue;
      }
      begin(type, bodyLen, false);
    }
    if (mode === 0 || remaining === 0) flush(n);
    sink = null;
  }

  return { idle: () => hdrFilled === 0 && remaining === 0, feed };
}
