// Every error class of src/errors.ts becomes the Cloudflare envelope with its own status and code.
import { expect, test } from "bun:test";
import { ApiError, BackendTimeoutError, CODE, ConditionalConflictError, LargeValueError, ShuttingDownError } from "../../src/errors.ts";
import { errorResponse } from "../../src/http/envelope.ts";

const answer = async (e: unknown) => {
  const logged: string[] = [];
  const r = errorResponse(e, (l) => logged.push(l));
  return { status: r.status, body: (await r.json()) as { success: boolean; errors: { code: number; message: string }[]; result: null }, logged };
};

test("each coded error answers its status and code, in the envelope", async () => {
  const cases: [unknown, number, number, RegExp][] = [
    [new ApiError(404, CODE.keyNotFound, "key not found"), 404, CODE.keyNotFound, /^key not found$/],
    [new BackendTimeoutError("primary did not answer within 5000 ms"), 503, CODE.internal, /^Storage temporarily unavailable: primary did not answer/],
    [new ShuttingDownError("kvdrive is shutting down"), 503, CODE.internal, /shutting down/],
    [new ConditionalConflictError("lost the compare-and-swap 5 times"), 503, CODE.internal, /^Storage temporarily unavailable: lost/],
    [new LargeValueError("namespace n key 6b: blob missing"), 500, CODE.internal, /^Internal error: .* logged\.$/],
    [new Error("boom"), 500, CODE.internal, /^Internal error: .* logged\.$/],
  ];
  for (const [e, status, code, message] of cases) {
    const a = await answer(e);
    expect(a.status).toBe(status);
    expect(a.body.success).toBe(false);
    expect(a.body.result).toBeNull();
    expect(a.body.errors).toHaveLength(1);
    expect(a.body.errors[0]!.code).toBe(code);
    expect(a.body.errors[0]!.message).toMatch(message);
  }
});

test("a storage fault is logged with its detail, which the client does not see", async () => {
  const a = await answer(new LargeValueError("namespace n key 6b (hex): blob values/x is missing"));
  expect(a.logged.join("\n")).toContain("blob values/x is missing");
  expect(JSON.stringify(a.body)).not.toContain("values/x");
});
