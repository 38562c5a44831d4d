// The backend stream scanner forwards bytes untouched, drops and injects messages, at any chunking.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import * as Be from "../../src/protocol/backend.ts";
import { createScanner, END_RANGE } from "../../src/protocol/scan.ts";

const NEED = new Uint8Array(256);
NEED[Be.B.ReadyForQuery] = 1;
NEED[Be.B.ErrorResponse] = 1;

test("forwards everything except dropped types, injects before a message, at every chunk size", () => {
  const row = Be.encodeDataRow([new Uint8Array(5000).fill(66)]);
  const stream = Buffer.concat([Be.PARSE_COMPLETE, Be.BIND_COMPLETE, row, Be.encodeCommandComplete("SELECT 1"), Be.errorMessage("22012", "x"), Be.encodeReadyForQuery("I")]);
  const expected = Buffer.concat([Be.BIND_COMPLETE, row, Be.encodeCommandComplete("SELECT 1"), Be.NO_DATA, Be.errorMessage("22012", "x"), Be.encodeReadyForQuery("I")]);
  for (const step of [1, 2, 5, 6, 100, 4999, stream.length]) {
    const sc = createScanner(NEED);
    const out: Uint8Array[] = [];
    const bodies: string[] = [];
    for (let i = 0; i < stream.length; i += step) {
      sc.feed(stream.subarray(i, i + step), {
        forward: (b) => void out.push(b.slice()),
        message(type, body, inject) {
          if (body) bodies.push(String.fromCharCode(type) + body.length);
          if (type === Be.B.ErrorResponse) inject(Be.NO_DATA);
          return type !== Be.B.ParseComplete;
        },
      });
    }
    expect(Buffer.concat(out)).toEqual(expected);
    expect(bodies).toEqual([`E${Be.errorMessage("22012", "x").length - 5}`, "Z1"]);
    expect(sc.idle()).toBe(true);
  }
});

test("END_RANGE: a ReadyForQuery closes the forward call it is in, so two answers never share one", () => {
  const answer = (v: string) => Buffer.concat([Be.BIND_COMPLETE, Be.encodeDataRow([new TextEncoder().encode(v)]), Be.encodeCommandComplete("SELECT 1"), Be.encodeReadyForQuery("I")]);
  const stream = Buffer.concat([answer("a"), answer("b"), answer("c")]);
  for (const step of [1, 3, 7, 20, stream.length]) {
    const sc = createScanner(NEED);
    const sends: Buffer[] = [];
    let ended = 0;
    for (let i = 0; i < stream.length; i += step) {
      sc.feed(stream.subarray(i, i + step), {
        forward: (b) => void sends.push(Buffer.from(b)),
        message: (type) => (type === Be.B.ReadyForQuery ? (ended++, END_RANGE) : true),
      });
    }
    expect(ended).toBe(3);
    expect(Buffer.concat(sends)).toEqual(stream);
    // Each answer ends a send: no send holds bytes of two answers.
    const ends: number[] = [];
    let at = 0;
    for (const s of sends) ends.push((at += s.length));
    for (const boundary of [answer("a").length, answer("a").length * 2, stream.length]) expect(ends).toContain(boundary);
    if (step === stream.length) expect(sends.length).toBe(3);
  }
});
