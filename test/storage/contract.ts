// The contract every storage backend passes: conditional writes, tombstones, listing ranges, purge.
import { expect, test } from "bun:test";
import type { Backend, StoredEntry } from "../../src/storage/store.ts";

const b = (s: string) => new TextEncoder().encode(s);
const row = (ns: string, key: string, value: string | null, ts: number, extra: Partial<StoredEntry> = {}): StoredEntry => ({
  ns,
  key: b(key),
  value: value === null ? null : b(value),
  metadata: null,
  expiration: null,
  version: { ts, nonce: 1 },
  tombstone: value === null,
  ...extra,
});
const str = (u: Uint8Array | null | undefined) => (u ? new TextDecoder().decode(u) : null);

export function backendContract(name: string, open: () => Backend) {
  test(`${name}: a write applies only when newer than what is stored`, async () => {
    const s = open();
    expect(await s.write([row("c1", "k", "v2", 200)])).toBe(1);
    expect(await s.write([row("c1", "k", "v1", 100)])).toBe(0);
    expect(await s.write([row("c1", "k", "v2-same", 200)])).toBe(0);
    expect(str((await s.get("c1", b("k")))!.value)).toBe("v2");
    expect(await s.write([row("c1", "k", "v3", 200, { version: { ts: 200, nonce: 2 } })])).toBe(1);
    expect(str((await s.get("c1", b("k")))!.value)).toBe("v3");
  });

  test(`${name}: a tombstone hides the key and an older write cannot resurrect it`, async () => {
    const s = open();
    await s.write([row("c2", "k", "v", 100)]);
    await s.write([row("c2", "k", null, 200)]);
    await s.write([row("c2", "k", "stale", 150)]);
    const got = await s.get("c2", b("k"));
    expect(got!.tombstone).toBe(true);
    expect(await s.list({ ns: "c2", after: null, from: null, before: null, limit: 10, now: 0 })).toEqual([]);
  });

  test(`${name}: getMany answers in request order with null for missing keys`, async () => {
    const s = open();
    await s.write([row("c3", "a", "1", 1), row("c3", "b", "2", 1)]);
    const got = await s.getMany("c3", [b("b"), b("zz"), b("a")]);
    expect(got.map((e) => str(e?.value))).toEqual(["2", null, "1"]);
  });

  test(`${name}: list honours after/from/before bounds, expiry and limit`, async () => {
    const s = open();
    await s.write(["a", "b1", "b2", "b3", "c"].map((k) => row("c4", k, k, 1)));
    await s.write([row("c4", "b0", "x", 1, { expiration: 50 })]);
    const names = async (q: Partial<Parameters<Backend["list"]>[0]>) =>
      (await s.list({ ns: "c4", after: null, from: null, before: null, limit: 100, now: 100, ...q })).map((e) => str(e.key));
    expect(await names({})).toEqual(["a", "b1", "b2", "b3", "c"]);
    expect(await names({ from: b("b"), before: b("c") })).toEqual(["b1", "b2", "b3"]);
    expect(await names({ after: b("b1"), limit: 2 })).toEqual(["b2", "b3"]);
    expect(await names({ now: 10 })).toContain("b0");
  });

  test(`${name}: purge removes expired entries and old tombstones only`, async () => {
    const s = open();
    await s.write([row("c5", "exp", "x", 1, { expiration: 100 }), row("c5", "live", "y", 1), row("c5", "oldtomb", null, 1_000), row("c5", "newtomb", null, 9_000)]);
    expect(await s.purge(200, 5_000)).toBeGreaterThanOrEqual(2);
    expect(await s.get("c5", b("exp"))).toBeNull();
    expect(await s.get("c5", b("oldtomb"))).toBeNull();
    expect((await s.get("c5", b("newtomb")))!.tombstone).toBe(true);
    expect(str((await s.get("c5", b("live")))!.value)).toBe("y");
  });
}
