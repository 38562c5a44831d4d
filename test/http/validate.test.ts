// Pure KV input validation at extreme values: each refusal is a ApiError with the documented status and code and
// a message naming the parameter and the limit.
import { expect, test } from "bun:test";
import { ApiError } from "../../src/errors.ts";
import { MAX_EXPIRATION } from "../../src/kv/limits.ts";
import { resolveExpiration, validateAccountId, validateKey, validateMetadata, validateNamespaceId, validateTitle } from "../../src/kv/validate.ts";

const NOW = 1_800_000_000;

function refusal(f: () => unknown): { status: number; code: number; message: string } {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    const k = e as ApiError;
    return { status: k.status, code: k.code, message: k.message };
  }
  throw new Error("expected a refusal");
}

test("expiration and expiration_ttl: every extreme is a 400 naming the parameter and the limit", () => {
  for (const e of ["9999999999999999999999", "9".repeat(400), 1e300, Number.MAX_VALUE, MAX_EXPIRATION + 1]) {
    const r = refusal(() => resolveExpiration(e, undefined, NOW));
    expect(r).toMatchObject({ status: 400, code: 10033 });
    expect(r.message).toMatch(/expiration .*at most 253402300799/);
  }
  for (const t of ["9223372036854775807", 9223372036854775807, "9".repeat(400), 1e300, MAX_EXPIRATION]) {
    const r = refusal(() => resolveExpiration(undefined, t, NOW));
    expect(r).toMatchObject({ status: 400, code: 10034 });
    expect(r.message).toMatch(/expiration_ttl .*at most \d+/);
  }
  for (const t of [-1, "-60", 59, 60.5, "60.5", "NaN", NaN, Infinity, "1e9", true, {}, [60]]) expect(refusal(() => resolveExpiration(undefined, t, NOW)).code).toBe(10034);
  expect(resolveExpiration(MAX_EXPIRATION, undefined, NOW)).toBe(MAX_EXPIRATION);
  expect(resolveExpiration(undefined, MAX_EXPIRATION - NOW, NOW)).toBe(MAX_EXPIRATION);
  expect(resolveExpiration(undefined, "60", NOW)).toBe(NOW + 60);
});

test("keys: lone surrogates are 400 10020, astral characters are fine", () => {
  for (const k of ["\ud800", "\udbff", "a\udc00", "\udc00\ud800"]) expect(refusal(() => validateKey(k))).toMatchObject({ status: 400, code: 10020 });
  expect(() => validateKey("\u{1F600}")).not.toThrow();
  expect(() => validateKey("\u0000")).not.toThrow();
});

test("metadata nested past the bound is refused before it is serialized", () => {
  let deep: unknown = 1;
  for (let i = 0; i < 200_000; i++) deep = [deep];
  expect(refusal(() => validateMetadata(deep))).toMatchObject({ status: 413, code: 10022 });
  let wide: Record<string, unknown> = {};
  for (let i = 0; i < 600; i++) wide = { a: wide };
  expect(refusal(() => validateMetadata(wide)).message).toMatch(/512 levels/);
  expect(validateMetadata({ a: { b: [1, 2] } })).toBe('{"a":{"b":[1,2]}}');
});

test("titles and ids", () => {
  expect(refusal(() => validateTitle("a\u0000"))).toMatchObject({ status: 400, code: 10019 });
  expect(refusal(() => validateTitle("\ud800"))).toMatchObject({ status: 400, code: 10019 });
  for (const id of ["\u0000", "", "0123456789ABCDEF0123456789ABCDEF", "0".repeat(33), "g".repeat(32)]) expect(refusal(() => validateNamespaceId(id))).toMatchObject({ status: 404, code: 10013 });
  expect(validateNamespaceId("0123456789abcdef0123456789abcdef")).toBe("0123456789abcdef0123456789abcdef");
  for (const id of ["", "\u0000", "a\nb", "x".repeat(129), "\ud800"]) expect(refusal(() => validateAccountId(id)).status).toBe(400);
  expect(validateAccountId("my-account")).toBe("my-account");
});
