// The bearer-token gate on its own: the last accepted header is remembered so a repeat skips the digests, and
// nothing that merely resembles it (a prefix, one character off, longer, another case) is let through by that.
import { expect, test } from "bun:test";
import { authGate } from "../../src/http/auth.ts";

const TOKEN = "gate-token-0123456789abcdef";
const gate = () => authGate({ apiToken: TOKEN, failureDelayMs: 0, maxPending: 10 });
const req = (authorization?: string) => new Request("http://127.0.0.1/metrics", { headers: authorization === undefined ? {} : { authorization } });
const status = async (g: ReturnType<typeof gate>, authorization?: string) => (await g.check(req(authorization)))?.status ?? 200;

test("after the token is accepted, look-alike headers are still refused and the accepted one still passes", async () => {
  const g = gate();
  const good = `Bearer ${TOKEN}`;
  expect(await status(g, good)).toBe(200);
  const lookAlikes = [
    good.slice(0, -1),
    good.slice(0, -1) + "g",
    "X" + good.slice(1),
    good + "0",
    good + good,
    `Bearer ${TOKEN.toUpperCase()}`,
    "B",
    `Bearer ${"x".repeat(TOKEN.length)}`,
  ];
  for (const h of lookAlikes) {
    expect({ h, status: await status(g, h) }).toEqual({ h, status: 403 });
    // The remembered header is unchanged by a refusal.
    expect(await status(g, good)).toBe(200);
  }
  expect(await status(g)).toBe(401);
  expect(await status(g, "")).toBe(401);
});

test("another accepted spelling of the header replaces the remembered one; both keep passing", async () => {
  const g = gate();
  for (const h of [`Bearer ${TOKEN}`, `bearer   ${TOKEN}`, `Bearer ${TOKEN}`, `BEARER ${TOKEN} `]) expect(await status(g, h)).toBe(200);
  expect(await status(g, `bearer   ${TOKEN}x`)).toBe(403);
});
