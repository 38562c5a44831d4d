// Counts in the codec are unsigned 16-bit, as Postgres reads them, and start-up packets are checked with
// Postgres' own rules and words.
import { expect, test } from "bun:test";
import { readStartup } from "../../src/protocol/frames.ts";
import * as Fe from "../../src/protocol/frontend.ts";
import * as Be from "../../src/protocol/backend.ts";
import { ProtocolError } from "../../src/errors.ts";

const body = (m: Uint8Array) => m.subarray(5);

test("Parse, Bind and FunctionCall round-trip 65,535 parameters", () => {
  const paramTypes = Array.from({ length: 65_535 }, (_, i) => (i % 2 ? 23 : 25));
  expect(Fe.decodeParse(body(Fe.encodeParse({ name: "s", query: "q", paramTypes })))).toEqual({ name: "s", query: "q", paramTypes });
  const params = Array.from({ length: 40_000 }, (_, i) => (i % 3 ? new Uint8Array([i & 0xff]) : null));
  const bind = { portal: "", statement: "s", paramFormats: Array(40_000).fill(1), params, resultFormats: Array(40_000).fill(0) };
  const enc = Fe.encodeBind(bind);
  expect(Fe.decodeBind(body(enc))).toEqual(bind);
  expect(Fe.checkBind(body(enc))).toEqual([1, 2]);
  const fc = { oid: 1, argFormats: [1], args: Array(33_000).fill(null), resultFormat: 1 };
  expect(Fe.decodeFunctionCall(body(Fe.encodeFunctionCall(fc)))).toEqual(fc);
  expect(Be.decodeParameterDescription(body(Be.encodeParameterDescription(paramTypes)))).toEqual(paramTypes);
});

test("a Bind whose counts run past its end is refused, not read beyond", () => {
  const b = new Uint8Array([0, 0, 0xff, 0xff]); // portal "", statement "", 65,535 formats and nothing else
  expect(() => Fe.checkBind(b)).toThrow("truncated");
  expect(() => Fe.decodeBind(b)).toThrow(ProtocolError);
});

test("start-up packets: a bad length or cancel closes silently, protocol 2 gets a protocol-2 error, layout errors use Postgres' words", () => {
  const closeOf = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as ProtocolError).reply;
    }
    return "none";
  };
  expect(closeOf(() => readStartup(Fe.TERMINATE, 10_000))).toBe("close");
  expect(closeOf(() => readStartup(new Uint8Array([0, 0, 0x27, 0x11, 0, 0, 0, 0]), 10_000))).toBe("close");
  expect(readStartup(new Uint8Array([0, 0, 0, 8, 0, 3, 0, 0, 9]), 10_000)).toEqual([new Uint8Array([0, 3, 0, 0]), 8]);
  expect(closeOf(() => Fe.decodeStartup(new Uint8Array([0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1])))).toBe("close");
  expect(closeOf(() => Fe.decodeStartup(new Uint8Array([0, 2, 0, 0])))).toBe("v2");
  expect(closeOf(() => Fe.decodeStartup(new Uint8Array([0, 4, 0, 0])))).toBe("error");
  expect(() => Fe.decodeStartup(new Uint8Array([0, 3, 0, 0, 0x61, 0, 0]))).toThrow("invalid startup packet layout: expected terminator as last byte");
  const start = Fe.encodeStartup({ user: "u", database: "d" });
  expect(Fe.decodeStartup(start.subarray(4))).toEqual({ kind: "Startup", version: Fe.PROTOCOL_3_0, params: Object.assign(Object.create(null), { user: "u", database: "d" }) });
  expect(new TextDecoder().decode(Be.errorMessageV2("x"))).toBe("EFATAL:  x\n\0");
});
