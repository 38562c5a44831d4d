// Session-isolation suite: hostile clients try to leave session state behind on pooled origin connections.
// After each hostile case, every origin connection of the pool is held at once (as many clients as the pool
// has connections, each in a transaction) and its whole session state is compared with a fresh direct
// connection's. Then: a client's own SETs stay its own, through lanes and the cache, with clients interleaved.
// Real drivers (pg, postgres.js), psql, and a real Postgres.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { sessionResets } from "../../src/pool/server/replay.ts";

const PGBENCH = ["/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench"].find((p) => fs.existsSync(p))!;


const opened: Array<{ end(): Promise<unknown> }> = [];

async function pgClient(url: string, config: Partial<pg.ClientConfig> = {}) {
  const c = new pg.Client({ connectionString: url, ...config });
  c.on("error", () => {});
  await c.connect();
  opened.push(c);
  return c;
}

async function run(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, PGCONNECT_TIMEOUT: "10", PGSSLMODE: "disable" } });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

// Everything a session can carry over. Values that differ per backend by nature (its pid) are left out.
const SNAPSHOT = `select current_user::text as current_user, session_user::text as session_user,
  current_setting('statement_timeout') as statement_timeout, current_setting('lock_timeout') as lock_timeout,
  current_setting('idle_in_transaction_session_timeout') as idle_timeout,
  current_setting('default_transaction_read_only') as read_only, current_setting('default_transaction_isolation') as isolation,
  current_setting('default_transaction_deferrable') as deferrable, current_setting('transaction_isolation') as xact_isolation,
  current_setting('session_replication_role') as replication_role, current_setting('search_path') as search_path,
  coalesce(current_setting('myapp.x', true), '') as myapp_x, current_setting('work_mem') as work_mem,
  current_setting('TimeZone') as timezone, current_setting('DateStyle') as datestyle, current_setting('application_name') as application_name,
  (select count(*) from pg_catalog.pg_class where relnamespace = pg_catalog.pg_my_temp_schema())::int as temp_objects,
  (select count(*) from pg_catalog.pg_listening_channels())::int as listening,
  (select count(*) from pg_catalog.pg_locks where pid = pg_catalog.pg_backend_pid() and locktype = 'advisory')::int as advisory_locks,
  (select count(*) from pg_catalog.pg_prepared_statements where from_sql)::int as sql_prepared,
  (select count(*) from pg_catalog.pg_cursors)::int as cursors,
  (select xact_start >= now() - interval '30 seconds' from pg_catalog.pg_stat_activity where pid = pg_catalog.pg_backend_pid()) as fresh_transaction`;


/** Holds every origin connection of the fixture's pool at once, each in a transaction, and reads its state. */
async function holdAll(f: PoolerFixture): Promise<Array<Record<string, unknown>>> {
  const clients = await Promise.all(Array.from({ length: f.config.poolSize }, () => pgClient(f.url(), { application_name: "victim" })));
  await Promise.all(clients.map((c) => c.query("begin")));
  const rows = await Promise.all(clients.map(async (c) => (await c.query(SNAPSHOT)).rows[0]));
  await Promise.all(clients.map((c) => c.query("commit")));
  await Promise.all(clients.map((c) => c.end()));
  return rows;
}

/** ORIGIN_DATABASE_URL runs the suite against another origin (Postgres 15 does not report search_path). */
async function origin(): Promise<TestPostgres> {
  const url = process.env.ORIGIN_DATABASE_URL;
  if (!url) return startTestPostgres();
  const u = new URL(url);
  return { url, user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), destroy: async () => {} } as unknown as TestPostgres;
}

/** Hostile cases where the attacker stays connected: the victim gets the same (only) origin connection. */
const staying: Array<[string, (a: pg.Client) => Promise<unknown>]> = [
  ["set_config('role', ..., false)", (a) => a.query("select set_config('role', 'kv_iso_role', false)")],
  ["select 1; set ...", (a) => a.query("select 1; set statement_timeout = 1")],
  ["begin; set ...; commit", (a) => a.query("begin; set default_transaction_read_only = on; commit")],
  ["begin, set, commit as three queries", async (a) => {
    await a.query("begin");
    await a.query("set idle_in_transaction_session_timeout = '1h'");
    await a.query("commit");
  }],
  ["a DO block that sets GUCs", (a) => a.query("do $$begin perform set_config('session_replication_role', 'replica', false); perform set_config('default_transaction_isolation', 'serializable', false); end$$")],
  ["a comment before SET", (a) => a.query("/* hello */ -- there\n set lock_timeout = 1")],
  ["SET search_path (psql's leak on Postgres 17 and older)", (a) => a.query("set search_path = pg_catalog")],
  ["a custom GUC", (a) => a.query("set myapp.x = 'attacker'")],
  ["a SET rolled back with its transaction", (a) => a.query("begin; set work_mem = '77MB'; rollback")],
  ["SET ... ROLLBACK TO SAVEPOINT", (a) => a.query("begin; savepoint s; set lock_timeout = 7; rollback to savepoint s; commit")],
  ["a SET in a failed implicit transaction", (a) => a.query("set work_mem = '78MB'; select 1/0").catch(() => {})],
  ["SET SESSION CHARACTERISTICS", (a) => a.query("set session characteristics as transaction isolation level serializable, deferrable")],
  ["a user function that calls set_config", (a) => a.query("select public.kv_iso_evil()")],
  ["an IMMUTABLE function that lies", async (a) => {
    await a.query("select public.kv_iso_lying()");
    await a.query("select public.kv_iso_lying()");
  }],
  ["a prepared set_config, called twice", async (a) => {
    await a.query({ name: "iso_sc", text: "select set_config('statement_timeout', $1, false)", values: ["2"] });
    await a.query({ name: "iso_sc", text: "select set_config('statement_timeout', $1, false)", values: ["3"] });
  }],
  ["set_config through the unnamed statement", (a) => a.query("select set_config($1, $2, false)", ["lock_timeout", "9"])],
  ["a builtin that runs SQL text (query_to_xml)", (a) => a.query("select query_to_xml('select set_config(''lock_timeout'', ''8'', false)', false, false, '')")],
  ["an INSERT into a table whose trigger calls set_config", (a) => a.query("insert into iso_trig values (1)")],
  ["a trigger created through the pooler, then an UPDATE", async (a) => {
    await a.query("create table if not exists iso_trig2 (x int); truncate iso_trig2; insert into iso_trig2 values (1)");
    await a.query("drop trigger if exists iso_t2 on iso_trig2; create trigger iso_t2 before update on iso_trig2 for each row execute function iso_trig_fn()");
    await a.query("update iso_trig2 set x = 2");
  }],
  ["SET LOCAL and set_config(..., true)", (a) => a.query("begin; set local statement_timeout = 5; select set_config('lock_timeout', '5', true); commit")],
];


/** The whole suite against one origin: `start` gives a Postgres to use, or null when there is none. */
function isolationSuite(label: string, start: () => Promise<TestPostgres>) {
  describe(label, () => {
    let db: TestPostgres;
    /** Pool of one origin connection: the victim must get the attacker's connection. */
    let one: PoolerFixture;
    /** Pool of three with read pipelining and the cache on, for clients' own state. */
    let three: PoolerFixture;
    let baseline: Record<string, unknown>;

    async function expectClean(f: PoolerFixture, label: string) {
      for (const row of await holdAll(f)) expect({ label, ...row }).toEqual({ label, ...baseline });
    }


    beforeAll(async () => {
      db = await start();
      const admin = await pgClient(db.url);
      await admin.query("drop schema if exists iso_a, iso_b cascade; drop table if exists public.which, iso_child, iso_parent, iso_trig, iso_trig2; drop function if exists public.kv_iso_evil(), public.kv_iso_lying()");
      await admin.query("do $$begin if not exists (select 1 from pg_roles where rolname = 'kv_iso_role') then create role kv_iso_role nologin; end if; end$$");
      await admin.query("create schema iso_a; create schema iso_b");
      await admin.query("create table public.which (v text); insert into public.which values ('public')");
      await admin.query("create table iso_a.which (v text); insert into iso_a.which values ('a')");
      await admin.query("create table iso_b.which (v text); insert into iso_b.which values ('b')");
      await admin.query("create table iso_parent (id int primary key); create table iso_child (p int references iso_parent)");
      await admin.query(`create function public.kv_iso_evil() returns int language plpgsql as $$
        begin perform set_config('statement_timeout', '1', false); perform set_config('myapp.x', 'evil', false); return 1; end $$`);
      await admin.query(`create or replace function iso_trig_fn() returns trigger language plpgsql as $$
        begin perform set_config('default_transaction_read_only', 'on', false); return new; end $$`);
      await admin.query("create table iso_trig (x int); create trigger iso_t before insert on iso_trig for each row execute function iso_trig_fn()");
      await admin.query(`create function public.kv_iso_lying() returns int language plpgsql immutable as $$
        begin perform set_config('search_path', 'iso_b', false); return 1; end $$`);
      const direct = await pgClient(db.url, { application_name: "victim" });
      await direct.query("begin");
      baseline = (await direct.query(SNAPSHOT)).rows[0];
      await direct.query("commit");
      one = await startPoolerFixture({ poolSize: 1, poolPipelineDepth: 4, originDatabaseUrl: db.url }, undefined, db);
      three = await startPoolerFixture({ poolSize: 3, poolPipelineDepth: 4, originDatabaseUrl: db.url }, undefined, db);
    }, 120_000);

    afterAll(async () => {
      for (const c of opened) await c.end().catch(() => {});
      await one?.stop();
      await three?.stop();
      await db?.destroy();
    }, 60_000);

    describe("a hostile client leaves nothing on its connection (pool of 1)", () => {
      for (const [name, attack] of staying) {
        test(name, async () => {
          const a = await pgClient(one.url());
          try {
            await attack(a);
            await expectClean(one, name);
          } finally {
            await a.end(); // a failure must not leave the pool's only connection held
          }
        });
      }

      test("postgres.js: set_config and SET through the extended protocol", async () => {
        const a = postgres(one.url(), { max: 1, onnotice: () => {} });
        opened.push({ end: () => a.end({ timeout: 1 }) });
        await a`select set_config('session_replication_role', 'replica', false)`;
        await a`set statement_timeout = 4321`;
        await expectClean(one, "postgres.js");
        // Its own tracked SET stays with it; the untracked one was reset with the connection.
        expect((await a`show statement_timeout`)[0]!.statement_timeout).toBe("4321ms");
        await a.end();
      });

      test("session_replication_role from one client does not turn off another's foreign keys", async () => {
        const a = await pgClient(one.url());
        await a.query("select set_config('session_replication_role', 'replica', false)");
        const b = await pgClient(one.url());
        await expect(b.query("insert into iso_child values (12345)")).rejects.toMatchObject({ code: "23503" });
        await b.end();
        await a.end();
      });

      test("pinned clients (SET ROLE, SESSION AUTHORIZATION, LISTEN, advisory lock, temp table, WITH HOLD cursor, PREPARE) are reset when they leave", async () => {
        const a = await pgClient(one.url());
        await a.query("set session authorization kv_iso_role");
        await a.query("set statement_timeout = 11");
        await a.query("reset session authorization");
        await a.query("set role kv_iso_role");
        await a.query("listen iso_chan");
        await a.query("select pg_advisory_lock(42)");
        await a.query("reset role");
        await a.query("create temp table iso_tmp (x int)");
        await a.query("begin; declare iso_cur cursor with hold for select 1; commit");
        await a.query("prepare iso_p as select 1");
        await a.query("set role kv_iso_role");
        await a.end();
        await expectClean(one, "pinned");
      });

      test("a pinned client keeps its own state while it stays", async () => {
        const a = await pgClient(one.url());
        await a.query("set role kv_iso_role");
        await a.query("select 1");
        expect((await a.query("select current_user::text as u")).rows[0].u).toBe("kv_iso_role");
        await a.end();
        await expectClean(one, "after the pinned client");
      });

      test("psql: set search_path in one session is not seen by the next (issue 11 item 4)", async () => {
        const r1 = await run(["psql", one.url(), "-At", "-c", "set search_path = pg_catalog", "-c", "show search_path"]);
        expect(r1.out).toBe("SET\npg_catalog\n");
        const r2 = await run(["psql", one.url(), "-At", "-c", "show search_path"]);
        expect(r2.out).toBe(`${baseline.search_path}\n`);
        await expectClean(one, "psql");
      });

      test("a start-up parameter name with a quote is refused (42602), not pasted into SQL", async () => {
        const a = postgres(one.url(), { max: 1, onnotice: () => {}, connection: { ['search_path" TO public; SET session_replication_role TO replica; SET "x']: "1" } as any });
        opened.push({ end: () => a.end({ timeout: 1 }) });
        await expect(a`select 1`).rejects.toMatchObject({ code: "42602" });
        await expectClean(one, "start-up parameter");
      });

      test("start-up settings of identity and superuser-only settings are A's alone, replayed in an order that works", async () => {
        const a = postgres(one.url(), { max: 1, onnotice: () => {}, connection: { session_replication_role: "replica", role: "kv_iso_role", lock_timeout: "6" } as any });
        opened.push({ end: () => a.end({ timeout: 1 }) });
        const mine = async () => (await a`select current_user::text as u, current_setting('session_replication_role') as r, current_setting('lock_timeout') as l`)[0];
        expect(await mine()).toEqual({ u: "kv_iso_role", r: "replica", l: "6ms" });
        await expectClean(one, "identity start-up settings");
        expect(await mine()).toEqual({ u: "kv_iso_role", r: "replica", l: "6ms" });
        await a.end();
        await expectClean(one, "identity start-up settings, after");
      });

      test("start-up settings with odd values are replayed as literals", async () => {
        const a = postgres(one.url(), { max: 1, onnotice: () => {}, connection: { "myapp.x": "it's'; set role kv_iso_role; --" } as any });
        opened.push({ end: () => a.end({ timeout: 1 }) });
        const [row] = await a`select current_setting('myapp.x') as x, current_user::text as u`;
        expect(row).toEqual({ x: "it's'; set role kv_iso_role; --", u: baseline.current_user as string });
        await expectClean(one, "start-up value");
        await a.end();
      });
    });

    describe("a client's own SETs stay its own (pool of 3, lanes and cache on)", () => {
      test("search_path, application_name, TimeZone and a custom GUC, with clients interleaved", async () => {
        const resets = sessionResets.total;
        const a = await pgClient(three.url());
        const b = await pgClient(three.url());
        const c = await pgClient(three.url());
        const pj = postgres(three.url(), { max: 1, onnotice: () => {} });
        opened.push({ end: () => pj.end({ timeout: 1 }) });
        await a.query("set search_path = iso_a; set application_name = 'client-a'");
        await a.query("begin; set myapp.x = 'a'; set timezone = 'Asia/Tokyo'; commit");
        await b.query("set search_path = iso_b");
        await b.query("set myapp.x = 'b'");
        await pj`set search_path = iso_b`;
        const wrong: string[] = [];
        const check = async (who: string, got: Promise<string>, want: string) => {
          const v = await got;
          if (v !== want) wrong.push(`${who}: ${v} instead of ${want}`);
        };
        for (let i = 0; i < 15; i++) {
          await Promise.all([
            // simple Query (lanes, cache), unnamed statements, named statements, postgres.js prepared calls
            check("a simple", a.query("select v from which").then((r) => r.rows[0].v), "a"),
            check("b simple", b.query("select v from which").then((r) => r.rows[0].v), "b"),
            check("c simple", c.query("select v from which").then((r) => r.rows[0].v), "public"),
            check("a unnamed", a.query("select v from which where $1::int = 1", [1]).then((r) => r.rows[0].v), "a"),
            check("b unnamed", b.query("select v from which where $1::int = 1", [1]).then((r) => r.rows[0].v), "b"),
            check("c named", c.query({ name: "iso_w", text: "select v from which where $1::int > 0", values: [i + 1] }).then((r) => r.rows[0].v), "public"),
            check("a named", a.query({ name: "iso_w", text: "select v from which where $1::int > 0", values: [i + 1] }).then((r) => r.rows[0].v), "a"),
            check("postgres.js", pj`select v from which where ${i} >= 0`.then((r) => r[0]!.v), "b"),
            check("a settings", a.query("select current_setting('myapp.x') || ' ' || current_setting('TimeZone') || ' ' || current_setting('application_name') as s").then((r) => r.rows[0].s), "a Asia/Tokyo client-a"),
            check("b settings", b.query("select current_setting('myapp.x') || ' ' || current_setting('application_name') as s").then((r) => r.rows[0].s), "b "),
            check("c settings", c.query("select coalesce(current_setting('myapp.x', true), '') || '|' || current_setting('search_path') as s").then((r) => r.rows[0].s), `|${baseline.search_path}`),
          ]);
        }
        expect(wrong).toEqual([]);
        const cache = three.pooler.stats().pools.reduce((n, p) => n + (p.cache.hit ?? 0), 0);
        const lanes = three.pooler.stats().pools.reduce((n, p) => n + p.pipelined, 0);
        expect(cache + lanes).toBeGreaterThan(0); // the fast paths were taken, and answered each client its own
        expect(sessionResets.total - resets).toBe(0); // tracked SETs are replayed, never a reason to reset
        await Promise.all([a.end(), b.end(), c.end(), pj.end({ timeout: 1 })]);
        await expectClean(three, "own settings");
      });

      test("two pg clients on one pool: A's search_path reaches A's reads and not B's (issue 10 item 2, lanes)", async () => {
        const a = await pgClient(three.url());
        const b = await pgClient(three.url());
        // Warm both up on lanes first, so the lanes exist with the default settings.
        for (let i = 0; i < 5; i++) await Promise.all([a.query("select v from which"), b.query("select v from which")]);
        await a.query("set search_path = iso_a");
        await a.query("set application_name = 'lane-a'");
        const seen = { a: new Set<string>(), b: new Set<string>() };
        for (let i = 0; i < 20; i++) {
          const [ra, rb] = await Promise.all([a.query("select v from which"), b.query("select v from which")]);
          seen.a.add(ra.rows[0].v);
          seen.b.add(rb.rows[0].v);
        }
        expect({ a: [...seen.a], b: [...seen.b] }).toEqual({ a: ["a"], b: ["public"] });
        await Promise.all([a.end(), b.end()]);
        await expectClean(three, "lanes");
      });

      test("the hot path resets nothing: pgbench -S and TPC-B with prepared statements through the pool", async () => {
        const init = await run([PGBENCH, "-i", "-s", "1", "-q", db.url]);
        expect(init.code).toBe(0);
        const resets = sessionResets.total;
        for (const script of [["-S"], ["-N"], []]) {
          const r = await run([PGBENCH, ...script, "-M", "prepared", "-c", "4", "-j", "1", "-t", "50", three.url()]);
          expect({ script, code: r.code, errors: r.err.split("\n").filter((l) => /error/i.test(l)) }).toEqual({ script, code: 0, errors: [] });
        }
        expect(sessionResets.total - resets).toBe(0);
      });

      test("RESET and RESET ALL go back to the defaults for the client, and DISCARD ALL too", async () => {
        const a = await pgClient(three.url());
        await a.query("set search_path = iso_a; set myapp.x = 'r'");
        expect((await a.query("select v from which")).rows[0].v).toBe("a");
        await a.query("reset search_path");
        expect((await a.query("select v from which")).rows[0].v).toBe("public");
        await a.query("set lock_timeout = 3");
        await a.query("reset all");
        expect((await a.query("select current_setting('lock_timeout') as t")).rows[0].t).toBe("0");
        await a.query("set lock_timeout = 4");
        await a.query("discard all");
        expect((await a.query("select current_setting('lock_timeout') as t")).rows[0].t).toBe("0");
        await a.end();
        await expectClean(three, "reset");
      });
    });

  });
}

/**
 * A throwaway cluster of Debian's Postgres 15 (the pooler tests' apt dependency), which does not report search_path
 * in ParameterStatus: the suite must hold there too (it runs when the binaries are installed).
 */
const PG15 = "/usr/lib/postgresql/15/bin";
async function startPostgres15(): Promise<TestPostgres> {
  const dir = tempDir("kvdrive-pg15-");
  const ids = process.getuid?.() === 0 ? { uid: Number(execFileSync("id", ["-u", "postgres"]).toString()), gid: Number(execFileSync("id", ["-g", "postgres"]).toString()) } : {};
  const data = path.join(dir, "data");
  const pwfile = path.join(dir, "pw");
  const password = "iso-" + Math.random().toString(36).slice(2);
  fs.writeFileSync(pwfile, password);
  if ("uid" in ids) fs.chownSync(dir, ids.uid!, ids.gid!), fs.chownSync(pwfile, ids.uid!, ids.gid!);
  execFileSync(`${PG15}/initdb`, [`--pgdata=${data}`, "--auth=scram-sha-256", "--username=postgres", `--pwfile=${pwfile}`, "--encoding=UTF8", "--locale=C"], { ...ids, stdio: "ignore" });
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const child = spawn(`${PG15}/postgres`, ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"], { ...ids, stdio: "ignore" });
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  for (let i = 0; ; i++) {
    const c = new pg.Client({ connectionString: url });
    c.on("error", () => {});
    try {
      await c.connect();
      await c.end();
      break;
    } catch (e) {
      if (i > 100) throw e;
      await Bun.sleep(100);
    }
  }
  const stopped = new Promise((resolve) => child.on("exit", resolve));
  return {
    url,
    user: "postgres",
    password,
    async destroy() {
      child.kill("SIGINT"); // fast shutdown
      await stopped;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  } as unknown as TestPostgres;
}

isolationSuite(process.env.ORIGIN_DATABASE_URL ? "on ORIGIN_DATABASE_URL" : "on the embedded Postgres", origin);
if (!process.env.ORIGIN_DATABASE_URL && fs.existsSync(`${PG15}/postgres`)) isolationSuite("on Debian's Postgres 15 (search_path not reported)", startPostgres15);
