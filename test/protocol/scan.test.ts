// The backend stream scanner forwards bytes untouched, drops and injects messages, at any chunking.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import * as Be from "../../src/protocol/backend.ts";
import { createScanner } from "../../src/protocol/scan.ts";

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
