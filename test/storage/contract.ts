// The contract every storage backend passes: conditional writes, duplicates in one write, tombstones, byte-order
// listing with ranges, purge, namespace drop. Each backend's test file calls backendContract with its own opener.
import { expect, test } from "bun:test";
import { digestOf, FULL_RANGE } from "../../src/storage/digest.ts";
import type { StoredEntry } from "../../src/storage/entry.ts";
import type { Backend } from "../../src/storage/backend.ts";

const b = (s: string) => new TextEncoder().encode(s);
const str = (u: Uint8Array | null | undefined) => (u ? new TextDecoder().decode(u) : null);

/** `prefix` keeps two backends sharing one database, or repeated runs, out of each other's namespaces. */
export interface ContractOptions {
  /** A multi-row write is all or nothing (Postgres). An object store writes key by key and skips that test. */
  atomic?: boolean;
  /** Rows in the large-write test (default 9,000: more than one statement's worth). An object store writes
   * them one request each, so it runs fewer. */
  largeWriteRows?: number;
  /**
   * How the failed-write case makes its last row fail for real on this backend. Postgres refuses a NUL inside
   * metadata text (the default); an object store stores any metadata, but a file-backed one (s3rver) fails on a
   * 3,000-byte key, whose object path is longer than the file system allows; a replicated pair needs both.
   */
  refusedRow?: "nul-metadata" | "long-key" | "both";
}

export function backendContract(name: string, open: () => Backend, prefix = "contract", opts: ContractOptions = { atomic: true }) {
  const ns = (n: string) => `${prefix}-${n}`;
  const row = (space: string, key: string | Uint8Array, value: string | null, ts: number, extra: Partial<StoredEntry> = {}): StoredEntry => ({
    ns: ns(space),
    key: typeof key === "string" ? b(key) : key,
    value: value === null ? null : b(value),
    metadata: null,
    expiration: null,
    version: { ts, nonce: 1 },
    tombstone: value === null,
    ...extra,
  });
  const names = async (s: Backend, space: string, q: Partial<Parameters<Backend["list"]>[0]> = {}) =>
    (await s.list({ ns: ns(space), after: null, from: null, before: null, limit: 1000, now: 0, ...q })).map((e) => e.key);

  test(`${name}: a write applies only when newer than what is stored, and says so`, async () => {
    const s = open();
    expect(await s.write([row("c1", "k", "v2", 200)])).toEqual([true]);
    expect(await s.write([row("c1", "k", "v1", 100)])).toEqual([false]);
    expect(await s.write([row("c1", "k", "v2-same", 200)])).toEqual([false]);
    expect(str((await s.get(ns("c1"), b("k")))!.value)).toBe("v2");
    // Same timestamp: the nonce decides.
    expect(await s.write([row("c1", "k", "v3", 200, { version: { ts: 200, nonce: 2 } }), row("c1", "other", "o", 1)])).toEqual([true, true]);
    const got = (await s.get(ns("c1"), b("k")))!;
    expect(str(got.value)).toBe("v3");
    expect(got.version).toEqual({ ts: 200, nonce: 2 });
    expect(await s.write([row("c1", "k", "stale", 150), row("c1", "fresh", "f", 1)])).toEqual([false, true]);
  });

  test(`${name}: two rows for one key in one write: the newest wins, in any order`, async () => {
    const s = open();
    expect(await s.write([row("c6", "k", "new", 300), row("c6", "k", "old", 100), row("c6", "k", "mid", 200)])).toEqual([true, false, false]);
    expect(str((await s.get(ns("c6"), b("k")))!.value)).toBe("new");
    expect(await s.write([row("c6", "j", "old", 100), row("c6", "j", null, 400)])).toEqual([false, true]);
    expect((await s.get(ns("c6"), b("j")))!.tombstone).toBe(true);
  });

  test(`${name}: values, metadata and expiration round-trip byte for byte`, async () => {
    const s = open();
    const bin = new Uint8Array(256).map((_, i) => i);
    await s.write([
      row("c7", "bin", null, 1, { value: bin, tombstone: false, metadata: '{"a":"é\\u0000"}', expiration: 4_102_444_800 }),
      row("c7", "empty", "", 1),
    ]);
    const got = (await s.get(ns("c7"), b("bin")))!;
    expect([...got.value!]).toEqual([...bin]);
    expect(got.metadata).toBe('{"a":"é\\u0000"}');
    expect(got.expiration).toBe(4_102_444_800);
    expect(got.tombstone).toBe(false);
    const empty = (await s.get(ns("c7"), b("empty")))!;
    expect(empty.value!.byteLength).toBe(0);
    expect(empty.metadata).toBeNull();
    expect(empty.expiration).toBeNull();
  });

  test(`${name}: a tombstone hides the key from list and an older write cannot resurrect it`, async () => {
    const s = open();
    await s.write([row("c2", "k", "v", 100)]);
    await s.write([row("c2", "k", null, 200)]);
    expect(await s.write([row("c2", "k", "stale", 150)])).toEqual([false]);
    const got = await s.get(ns("c2"), b("k"));
    expect(got!.tombstone).toBe(true);
    expect(await names(s, "c2")).toEqual([]);
  });

  test(`${name}: getMany answers in request order with null for missing keys`, async () => {
    const s = open();
    await s.write([row("c3", "a", "1", 1), row("c3", "b", "2", 1), row("c3", "a", "1", 1, { ns: ns("c3-other") })]);
    const got = await s.getMany(ns("c3"), [b("b"), b("zz"), b("a"), b("b")]);
    expect(got.map((e) => str(e?.value))).toEqual(["2", null, "1", "2"]);
    expect(await s.getMany(ns("c3"), [])).toEqual([]);
  });

  test(`${name}: list is in byte order of the keys, whatever the characters`, async () => {
    const s = open();
    const keys = [b("a"), b("B"), b("é"), b("\u{1F600}"), b("\uFFFD"), b("a\u0000b"), b("a "), new Uint8Array([0x00]), b("z"), b("\u00ff")];
    await s.write(keys.map((k, i) => row("c8", k, `v${i}`, 1)));
    const listed = await names(s, "c8");
    const expected = [...keys].sort((x, y) => Buffer.compare(x, y));
    expect(listed.map((k) => Buffer.from(k).toString("hex"))).toEqual(expected.map((k) => Buffer.from(k).toString("hex")));
  });

  test(`${name}: list honours after/from/before bounds, expiry and limit`, async () => {
    const s = open();
    await s.write(["a", "b1", "b2", "b3", "c"].map((k) => row("c4", k, k, 1)));
    await s.write([row("c4", "b0", "x", 1, { expiration: 50 })]);
    const list = async (q: Partial<Parameters<Backend["list"]>[0]>) => (await names(s, "c4", { now: 100, ...q })).map(str);
    expect(await list({})).toEqual(["a", "b1", "b2", "b3", "c"]);
    expect(await list({ from: b("b"), before: b("c") })).toEqual(["b1", "b2", "b3"]);
    expect(await list({ after: b("b1"), limit: 2 })).toEqual(["b2", "b3"]);
    expect(await list({ after: b("b1"), from: b("b"), before: b("c") })).toEqual(["b2", "b3"]);
    // Expiry is exclusive: an entry expiring at `now` is already gone.
    expect(await list({ now: 49 })).toContain("b0");
    expect(await list({ now: 50 })).not.toContain("b0");
    const meta = (await s.list({ ns: ns("c4"), after: null, from: b("b0"), before: b("b1"), limit: 10, now: 10 }))[0]!;
    expect(meta.expiration).toBe(50);
  });

  test(`${name}: purge removes expired entries and old tombstones only`, async () => {
    const s = open();
    await s.write([
      row("c5", "exp", "x", 1, { expiration: 100 }),
      row("c5", "later", "x", 1, { expiration: 1000 }),
      row("c5", "live", "y", 1),
      row("c5", "oldtomb", null, 1_000),
      row("c5", "newtomb", null, 9_000),
    ]);
    expect(await s.purge(200, 5_000)).toBeGreaterThanOrEqual(2);
    expect(await s.get(ns("c5"), b("exp"))).toBeNull();
    expect(await s.get(ns("c5"), b("oldtomb"))).toBeNull();
    expect((await s.get(ns("c5"), b("newtomb")))!.tombstone).toBe(true);
    expect(str((await s.get(ns("c5"), b("live")))!.value)).toBe("y");
    expect(str((await s.get(ns("c5"), b("later")))!.value)).toBe("x");
  });

  test(`${name}: a large write is ${opts.atomic === false ? "complete" : "atomic and complete"}`, async () => {
    const s = open();
    const n = opts.largeWriteRows ?? 9000;
    const rows = Array.from({ length: n }, (_, i) => row("c9", `k${String(i).padStart(5, "0")}`, `v${i}`, 10));
    const applied = await s.write(rows);
    expect(applied.every(Boolean)).toBe(true);
    expect(applied.length).toBe(n);
    const listed = await names(s, "c9", { limit: 10_000 });
    expect(listed.length).toBe(n);
    // Half of them older, half newer: the flags say which.
    const again = rows.map((r, i) => ({ ...r, version: { ts: i % 2 ? 20 : 5, nonce: 1 } }));
    const flags = await s.write(again);
    expect(flags.filter(Boolean).length).toBe(n / 2);
    expect(flags[1]).toBe(true);
    expect(flags[0]).toBe(false);
  });

  test(`${name}: a write that fails in its last row ${opts.atomic === false ? "is refused, and each row it stored is whole" : "leaves nothing behind"}`, async () => {
    const s = open();
    const n = opts.largeWriteRows ?? 9000;
    const rows = Array.from({ length: n }, (_, i) => row("c11", `k${i}`, `v${i}`, 10));
    // A real fault of this backend, in the row that sorts last (last chunk): see ContractOptions.refusedRow.
    const how = opts.refusedRow ?? "nul-metadata";
    const badKey = how === "nul-metadata" ? "zz-bad" : `zz-bad-${"z".repeat(2994)}`;
    rows.push(row("c11", badKey, "x", 10, how === "long-key" ? {} : { metadata: "nul: \0" }));
    await expect(s.write(rows)).rejects.toThrow();
    // A replicated pair whose sides stored different rows lists only once its repair has run: until then it
    // answers 503 "retry", as a client would see it.
    let listed: Uint8Array[] | null = null;
    for (const deadline = Date.now() + 60_000; listed === null; ) {
      try {
        listed = await names(s, "c11", { limit: 10_000 });
      } catch (e) {
        if ((e as { status?: number }).status !== 503 || Date.now() > deadline) throw e;
        await Bun.sleep(250);
      }
    }
    if (opts.atomic !== false) return expect(listed).toEqual([]);
    // Not atomic across keys (an object store writes key by key; shards commit independently): rows before
    // the fault may be stored, and each of them is whole; the refused row is not.
    expect(listed.map(str).filter((k) => k!.startsWith("zz-bad"))).toEqual([]);
    const got = await s.getMany(ns("c11"), listed);
    got.forEach((e, i) => expect(str(e!.value)).toBe(`v${str(listed[i]!)!.slice(1)}`));
  });

  test(`${name}: dropNamespace removes every entry of that namespace only`, async () => {
    const s = open();
    await s.write([row("c10", "a", "1", 1), row("c10", "b", null, 1), row("c10-keep", "a", "1", 1)]);
    await s.dropNamespace(ns("c10"));
    expect(await s.getMany(ns("c10"), [b("a"), b("b")])).toEqual([null, null]);
    expect(str((await s.get(ns("c10-keep"), b("a")))!.value)).toBe("1");
    expect(await s.ping()).toBe(true);
  });

  test(`${name}: scan and versions walk every entry in key order, tombstones and expired ones included`, async () => {
    const s = open();
    await s.write([row("c12", "a", "1", 5), row("c12", "b", null, 6), row("c12", "c", "3", 7, { expiration: 10 }), row("c12", "d", "4", 8), row("c12-other", "a", "x", 1)]);
    const all = await s.scan({ ns: ns("c12"), after: null, before: null, limit: 100 });
    expect(all.map((e) => str(e.key))).toEqual(["a", "b", "c", "d"]);
    expect(all.map((e) => e.tombstone)).toEqual([false, true, false, false]);
    expect(str(all[2]!.value)).toBe("3");
    expect(all[2]!.version).toEqual({ ts: 7, nonce: 1 });
    const page = await s.scan({ ns: ns("c12"), after: b("a"), before: b("d"), limit: 1 });
    expect(page.map((e) => str(e.key))).toEqual(["b"]);
    const vs = await s.versions({ ns: ns("c12"), after: b("a"), before: null, limit: 10 });
    expect(vs.map((v) => [str(v.key), v.version.ts, v.tombstone, v.expiration])).toEqual([["b", 6, true, null], ["c", 7, false, 10], ["d", 8, false, null]]);
  });

  test(`${name}: digests agree with the entries, leave out expired ones and change with any version`, async () => {
    const s = open();
    await s.write([row("c13", "a", "1", 5), row("c13", "b", null, 6), row("c13", "c", "3", 7, { expiration: 10 }), row("c13", "d", "4", 8)]);
    const full = await s.digest(ns("c13"), FULL_RANGE, 100);
    expect(full).toEqual(digestOf([{ key: b("a"), version: { ts: 5, nonce: 1 } }, { key: b("b"), version: { ts: 6, nonce: 1 } }, { key: b("d"), version: { ts: 8, nonce: 1 } }]));
    expect((await s.digest(ns("c13"), FULL_RANGE, 9)).count).toBe(4);
    expect(await s.digest(ns("c13"), { start: b("b"), end: b("d") }, 100)).toEqual(digestOf([{ key: b("b"), version: { ts: 6, nonce: 1 } }]));
    await s.write([row("c13", "a", "1", 5, { version: { ts: 5, nonce: 2 } })]);
    expect(await s.digest(ns("c13"), FULL_RANGE, 100)).not.toEqual(full);
    expect(await s.digest(ns("c13-none"), FULL_RANGE, 100)).toEqual({ count: 0, sum: 0n });
  });

  test(`${name}: namespaceIds lists the namespaces holding entries, paged`, async () => {
    const s = open();
    await s.write([row("c14-a", "k", "1", 1), row("c14-b", "k", null, 1), row("c14-c", "k", "1", 1)]);
    const ids: string[] = [];
    let after: string | null = ns("c14");
    for (;;) {
      const page: string[] = await s.namespaceIds(after, 2);
      ids.push(...page.filter((i) => i.startsWith(ns("c14-"))));
      if (page.length < 2 || !page[page.length - 1]!.startsWith(ns("c14-"))) break;
      after = page[page.length - 1]!;
    }
    expect(ids).toEqual([ns("c14-a"), ns("c14-b"), ns("c14-c")]);
  });

  test(`${name}: tombstones are found by age and removed only while they hold that exact version`, async () => {
    const s = open();
    await s.write([row("c15", "t1", null, 100), row("c15", "t2", null, 200), row("c15", "t3", null, 9_000), row("c15", "live", "x", 100)]);
    const found: Array<{ ns: string; key: Uint8Array; version: { ts: number; nonce: number } }> = [];
    let after: { ns: string; key: Uint8Array } | null = null;
    for (;;) {
      const page = await s.tombstones(1_000, after, 1);
      found.push(...page.filter((t) => t.ns === ns("c15")));
      if (page.length < 1) break;
      after = page[page.length - 1]!;
    }
    expect(found.map((t) => str(t.key))).toEqual(["t1", "t2"]);
    // t2 is rewritten after it was found: its removal must not take the newer write.
    await s.write([row("c15", "t2", "back", 300)]);
    expect(await s.removeIfVersion(found)).toBe(1);
    expect(await s.get(ns("c15"), b("t1"))).toBeNull();
    expect(str((await s.get(ns("c15"), b("t2")))!.value)).toBe("back");
    expect(await s.removeIfVersion([])).toBe(0);
  });
}
