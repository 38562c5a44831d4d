// Failure paths over real sockets: authentication errors, bad and hostile protocol input, a full pool
// with a wait timeout, and 1,000 idle clients on a pool of 10.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { errorOf, rawConnect, type RawConn } from "./raw.ts";
import { encodeBind, encodeQuery, encodeStartup, encodeSSLRequest, encodeGSSENCRequest, PROTOCOL_3_2, TERMINATE } from "../../src/protocol/frontend.ts";
import { decodeNegotiateProtocolVersion, decodeAuthentication } from "../../src/protocol/backend.ts";

let pgServer: TestPostgres;
let scram: PoolerFixture;
let trust: PoolerFixture;

beforeAll(async () => {
  pgServer = await startTestPostgres();
  scram = await startPoolerFixture({ poolSize: 10 }, undefined, pgServer);
  trust = await startPoolerFixture({ pgAuth: "trust", poolSize: 1, poolWaitTimeoutMs: 300, pgMaxMessageBytes: 64 * 1024, pgLoginTimeoutSeconds: 1 }, undefined, pgServer);
}, 60_000);
afterAll(async () => {
  await trust.stop();
  await scram.stop();
  await pgServer.destroy();
}, 60_000);

async function connectPg(url: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

/** A trust-mode raw session that is past start-up. */
async function rawSession(): Promise<RawConn> {
  const r = await rawConnect(trust.pooler.port);
  r.write(encodeStartup({ user: pgServer.user, database: "postgres" }));
  await r.read((m) => m.type === "Z");
  return r;
}

describe("authentication", () => {
  test("wrong password gets 28P01", async () => {
    await expect(connectPg(scram.url("postgres", pgServer.user, "wrong"))).rejects.toMatchObject({ code: "28P01" });
  });
  test("unknown user gets 28P01 after the same exchange", async () => {
    await expect(connectPg(scram.url("postgres", "nobody", "x"))).rejects.toMatchObject({ code: "28P01" });
  });
  test("unknown database gets 3D000", async () => {
    await expect(connectPg(scram.url("no_such_database"))).rejects.toMatchObject({ code: "3D000" });
  });
  test("a client's database name selects the origin database", async () => {
    const admin = await connectPg(scram.url());
    await admin.query("create database failures_other");
    await admin.end();
    const c = await connectPg(scram.url("failures_other"));
    expect((await c.query("select current_database() as d")).rows[0].d).toBe("failures_other");
    await c.end();
  });
  test("MD5 authentication when configured", async () => {
    const md5 = await startPoolerFixture({ pgAuth: "md5" }, undefined, pgServer);
    try {
      const c = await connectPg(md5.url());
      expect((await c.query("select 1 as one")).rows[0].one).toBe(1);
      await c.end();
      await expect(connectPg(md5.url("postgres", pgServer.user, "nope"))).rejects.toMatchObject({ code: "28P01" });
    } finally {
      await md5.stop();
    }
  });
  test("KVDRIVE_PG_USERS users authenticate with their own passwords", async () => {
    // Each client runs on the origin as its own role (KVDRIVE_PG_ORIGIN_ROLE=client): the role must exist there.
    const admin = await connectPg(pgServer.url);
    await admin.query("create role app login password 's3cret-pass'");
    await admin.end();
    const users = await startPoolerFixture({ pgUsers: ["app=s3cret-pass"] }, undefined, pgServer);
    try {
      const c = await connectPg(users.url("postgres", "app", "s3cret-pass"));
      expect((await c.query("select 1 as one")).rows[0].one).toBe(1);
      await c.end();
      await expect(connectPg(users.url("postgres", "app", "wrong"))).rejects.toMatchObject({ code: "28P01" });
      await expect(connectPg(users.url())).rejects.toMatchObject({ code: "28P01" });
    } finally {
      await users.stop();
    }
  });
});

describe("opening negotiation", () => {
  test("SSLRequest and GSSENCRequest are answered N, then start-up proceeds", async () => {
    const r = await rawConnect(trust.pooler.port);
    r.write(encodeGSSENCRequest());
    expect(await r.readByte()).toBe("N");
    r.write(encodeSSLRequest());
    expect(await r.readByte()).toBe("N");
    r.write(encodeStartup({ user: pgServer.user, database: "postgres" }));
    const msgs = await r.read((m) => m.type === "Z");
    expect(msgs.map((m) => m.type)).toContain("K");
    r.end();
  });
  test("protocol 3.2 and _pq_ options get NegotiateProtocolVersion for 3.0", async () => {
    const r = await rawConnect(scram.pooler.port);
    r.write(encodeStartup({ user: pgServer.user, database: "postgres", "_pq_.test_option": "1" }, PROTOCOL_3_2));
    const msgs = await r.read((m) => m.type === "R");
    expect(msgs[0]!.type).toBe("v");
    expect(decodeNegotiateProtocolVersion(msgs[0]!.body)).toEqual({ newestMinor: 0, unrecognised: ["_pq_.test_option"] });
    expect(decodeAuthentication(msgs[1]!.body)).toEqual({ kind: "SASL", mechanisms: ["SCRAM-SHA-256"] });
    r.end();
  });
  test("a bad start-up packet gets 08P01 and is closed", async () => {
    const r = await rawConnect(trust.pooler.port);
    r.write(new Uint8Array([0, 0, 0, 8, 0, 9, 0, 9])); // version 9.9
    const msgs = await r.read((m) => m.type === "E");
    expect(errorOf(msgs.at(-1)!).C).toBe("0A000");
    await r.closed();
    // An invalid length gets no answer, only the close, as from Postgres (see bounds-startup.test.ts).
    const g = await rawConnect(trust.pooler.port);
    g.write(new Uint8Array([0, 0, 0, 2, 1, 2, 3, 4]));
    expect(await g.read(() => false)).toEqual([]);
    await g.closed();
  });
});

describe("slow and vanishing peers", () => {
  test("a client that never finishes start-up is dropped after KVDRIVE_PG_LOGIN_TIMEOUT_SECONDS", async () => {
    const r = await rawConnect(trust.pooler.port);
    const err = errorOf((await r.read((m) => m.type === "E", 10_000)).at(-1)!);
    expect(err.C).toBe("08P01");
    expect(err.M).toContain("KVDRIVE_PG_LOGIN_TIMEOUT_SECONDS");
    await r.closed();
  });
  test("origin connections killed while idle are replaced", async () => {
    const c = await connectPg(scram.url());
    await c.query("select 1");
    const admin = await connectPg(pgServer.url);
    const killed = await admin.query("select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()) x");
    expect(killed.rows[0].n).toBeGreaterThan(0);
    await admin.end();
    await Bun.sleep(100);
    expect((await c.query("select 2 as n")).rows[0].n).toBe(2);
    await c.end();
  });
  test("a client whose origin connection dies mid-transaction gets an error, others go on", async () => {
    const c = await connectPg(scram.url());
    c.on("error", () => {});
    await c.query("begin");
    const pid = (await c.query("select pg_backend_pid() as p")).rows[0].p;
    const admin = await connectPg(pgServer.url);
    await admin.query("select pg_terminate_backend($1)", [pid]);
    await admin.end();
    await expect(c.query("select 1")).rejects.toBeDefined();
    const d = await connectPg(scram.url());
    expect((await d.query("select 3 as n")).rows[0].n).toBe(3);
    await d.end();
  });
});

describe("hostile input after start-up", () => {
  test("a malformed Bind gets 08P01 and only that client is closed", async () => {
    const other = await rawSession();
    const r = await rawSession();
    r.write(new Uint8Array([0x42, 0, 0, 0, 6, 0x41, 0x42])); // Bind whose names are not NUL-terminated
    const msgs = await r.read((m) => m.type === "E");
    expect(errorOf(msgs.at(-1)!).C).toBe("08P01");
    await r.closed();
    other.write(encodeQuery("select 1"));
    expect((await other.read((m) => m.type === "Z")).map((m) => m.type).join("")).toBe("TDCZ");
    other.write(TERMINATE);
  });
  test("an unknown message type gets 08P01", async () => {
    const r = await rawSession();
    r.write(new Uint8Array([0x7a, 0, 0, 0, 4]));
    expect(errorOf((await r.read((m) => m.type === "E")).at(-1)!).C).toBe("08P01");
    await r.closed();
  });
  test("a message over KVDRIVE_PG_MAX_MESSAGE_BYTES gets 54000", async () => {
    const r = await rawSession();
    r.write(new Uint8Array([0x51, 0x10, 0, 0, 0])); // Query claiming 256 MiB
    const err = errorOf((await r.read((m) => m.type === "E")).at(-1)!);
    expect(err.C).toBe("54000");
    expect(err.M).toContain("65536");
    await r.closed();
  });
  test("a Bind with an impossible parameter length gets 08P01", async () => {
    const r = await rawSession();
    const bind = encodeBind({ portal: "", statement: "", paramFormats: [], params: [new Uint8Array(4)], resultFormats: [] });
    bind[bind.length - 9] = 0x7f; // parameter length now far beyond the message
    r.write(bind);
    expect(errorOf((await r.read((m) => m.type === "E")).at(-1)!).C).toBe("08P01");
    await r.closed();
    // The origin connection was never sent the bad message: the pool's only connection still works.
    const next = await rawSession();
    next.write(encodeQuery("select 1"));
    expect((await next.read((m) => m.type === "Z")).map((m) => m.type).join("")).toBe("TDCZ");
    next.end();
  });
  test("FunctionCall is refused with 0A000 and the client stays usable", async () => {
    const r = await rawSession();
    r.write(new Uint8Array([0x46, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    const msgs = await r.read((m) => m.type === "Z");
    expect(errorOf(msgs.find((m) => m.type === "E")!).C).toBe("0A000");
    r.write(encodeQuery("select 1"));
    expect((await r.read((m) => m.type === "Z")).map((m) => m.type).join("")).toBe("TDCZ");
    r.end();
  });
});

describe("pool limits", () => {
  test("clients over KVDRIVE_PG_MAX_CLIENTS get 53300; stopping the pooler tells clients 57P01", async () => {
    const small = await startPoolerFixture({ pgAuth: "trust", pgMaxClients: 2 }, undefined, pgServer);
    const a = await rawConnect(small.pooler.port);
    const b = await rawConnect(small.pooler.port);
    const c = await rawConnect(small.pooler.port);
    expect(errorOf((await c.read((m) => m.type === "E")).at(-1)!).C).toBe("53300");
    await c.closed();
    a.write(encodeStartup({ user: pgServer.user, database: "postgres" }));
    await a.read((m) => m.type === "Z");
    await small.stop();
    expect(errorOf((await a.read((m) => m.type === "E")).at(-1)!).C).toBe("57P01");
    await a.closed();
    b.end();
  });

  test("waiting longer than KVDRIVE_POOL_WAIT_TIMEOUT_MS gets 53300 and the client stays usable", async () => {
    const holder = await connectPg(trust.url());
    const waiter = await connectPg(trust.url());
    await holder.query("begin");
    await holder.query("select 1");
    await expect(waiter.query("select 2")).rejects.toMatchObject({ code: "53300" });
    await holder.query("commit");
    expect((await waiter.query("select 3 as n")).rows[0].n).toBe(3);
    await holder.end();
    await waiter.end();
  });

  test("1,000 idle clients on a pool of 10, then queries still work", async () => {
    const clients: pg.Client[] = [];
    for (let i = 0; i < 1000; i += 50) clients.push(...(await Promise.all(Array.from({ length: 50 }, () => connectPg(scram.url())))));
    const s = scram.pooler.stats().pools.find((p) => p.database === "postgres")!;
    expect(s.activeServers + s.idleServers).toBeLessThanOrEqual(10);
    expect(scram.pooler.stats().clients).toBeGreaterThanOrEqual(1000);
    const picks = [0, 1, 499, 500, 998, 999].map((i) => clients[i]!);
    const out = await Promise.all(picks.map((c, i) => c.query("select $1::int as n", [i])));
    expect(out.map((r) => r.rows[0].n)).toEqual([0, 1, 2, 3, 4, 5]);
    const all = await Promise.all(clients.map((c) => c.query("select 1 as one")));
    expect(all.every((r) => r.rows[0].one === 1)).toBe(true);
    await Promise.all(clients.map((c) => c.end()));
  }, 60_000);
});
