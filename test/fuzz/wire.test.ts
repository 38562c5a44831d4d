// The wire-protocol fuzzer: seeded sequences of frontend messages, well-framed with random fields (every message
// type, before and after login, in and out of transactions, extended-protocol sequences with wrong counts, names
// and formats, COPY in odd states) and malformed (bad, truncated and giant lengths, unknown types), sent to a
// pooler in its own process. The oracle: the pooler stays up; every answer is well-framed; every error is an
// ErrorResponse with a real SQLSTATE and never XX000 from the pooler; a closed connection was told why (FATAL) or
// asked for it; a bystander client keeps working throughout; afterwards every origin connection is healthy and
// idle (no leaked transaction) and the RSS grew by a bounded amount.
//
// FUZZ_SEED (default 1) and FUZZ_CASES (default 150, about 10-20 s) pick the run; `bun run fuzz` runs longer.
// A failure prints the seed and case number, and the case's messages, to replay it.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(600_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import pg from "pg";
import { B, decodeErrorResponse } from "../../src/protocol/backend.ts";
import { createFrames } from "../../src/protocol/frames.ts";
import * as Fe from "../../src/protocol/frontend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startChildPooler, type ChildPooler } from "../pool/bounds-helpers.ts";
import { rng, type Rng } from "./rng.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 1);
const CASES = Number(process.env.FUZZ_CASES ?? 150);
const CONCURRENCY = 4;
const POOL_SIZE = 4;
const MiB = 1024 * 1024;

let origin: TestPostgres;
let pooler: ChildPooler;
let url: string;

beforeAll(async () => {
  origin = await startTestPostgres();
  pooler = await startChildPooler(origin.url, { pgAuth: "trust", poolSize: POOL_SIZE, pgLoginTimeoutSeconds: 5, pgMaxMessageBytes: 4 * MiB });
  url = `postgres://${origin.user}@127.0.0.1:${pooler.port}/postgres`;
  const c = new pg.Client({ connectionString: origin.url });
  await c.connect();
  await c.query("create table fuzz_t(id int primary key, v text)");
  await c.query("insert into fuzz_t select g, 'v' || g from generate_series(1, 50) g");
  await c.end();
}, 120_000);
afterAll(async () => {
  await pooler?.stop();
  await origin?.destroy();
}, 60_000);


const SQL = [
  "select 1",
  "select id, v from fuzz_t where id = 3",
  "select * from fuzz_t order by id limit 5",
  "begin",
  "commit",
  "rollback",
  "begin; select 1",
  "select 1; select 2",
  "select $1::int",
  "select $1::text, $2::int",
  "select * from fuzz_t where id = $1",
  "insert into fuzz_t values (1000 + (random() * 100000)::int, 'x') on conflict do nothing",
  "update fuzz_t set v = v where id = 1",
  "set statement_timeout = '5s'",
  "set application_name = 'fuzz'",
  "reset all",
  "select pg_sleep(0.01)",
  "copy fuzz_t to stdout",
  "copy (select 1) to stdout",
  "copy fuzz_t from stdin",
  "listen fuzz_channel",
  "notify fuzz_channel, 'x'",
  "unlisten *",
  "prepare fz as select 1",
  "execute fz",
  "deallocate all",
  "declare c cursor for select 1",
  "fetch 1 from c",
  "savepoint s",
  "rollback to savepoint s",
  "selec syntax error",
  "select 1/0",
  "select nonexistent_column from fuzz_t",
  "",
  ";",
  "select repeat('x', 100000)",
  "discard all",
  "show search_path",
];

const NAMES = ["", "", "s1", "s2", "portal", "fz", "\u00e9t\u00e9", "x".repeat(70)];
const utf8 = new TextEncoder();

function randomBytes(r: Rng, n: number) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r.int(256);
  return b;
}

/** A frontend message with type and length as given (a body of any content). */
function framed(type: number, body: Uint8Array, length = body.length + 4) {
  const m = new Uint8Array(5 + body.length);
  m[0] = type;
  new DataView(m.buffer).setInt32(1, length);
  m.set(body, 5);
  return m;
}

/** One well-framed message with random fields. */
function wellFramed(r: Rng): { bytes: Uint8Array; terminate?: boolean } {
  switch (r.int(16)) {
    case 0:
    case 1:
      return { bytes: Fe.encodeQuery(r.pick(SQL)) };
    case 2:
    case 3: {
      const n = r.pick([0, 0, 1, 2, 3, r.int(40)]);
      return { bytes: Fe.encodeParse({ name: r.pick(NAMES), query: r.pick(SQL), paramTypes: Array.from({ length: n }, () => r.pick([0, 23, 25, 16, 17, 1043, r.int(100000)])) }) };
    }
    case 4:
    case 5: {
      const np = r.pick([0, 1, 2, 3, r.int(10)]);
      const params = Array.from({ length: np }, () => (r.chance(0.15) ? null : r.chance(0.7) ? utf8.encode(String(r.int(100))) : randomBytes(r, r.int(12))));
      // Mostly well-formed, so cases reach deeper states; sometimes counts and codes that do not match.
      const nf = r.chance(0.85) ? r.pick([0, np, np ? 1 : 0]) : r.pick([np + 1, r.int(5)]);
      const code = () => (r.chance(0.95) ? r.pick([0, 1]) : r.pick([2, -1, 7]));
      return {
        bytes: Fe.encodeBind({
          portal: r.pick(NAMES),
          statement: r.pick(NAMES),
          paramFormats: Array.from({ length: nf }, code),
          params,
          resultFormats: Array.from({ length: r.pick([0, 1, 2]) }, code),
        }),
      };
    }
    case 6:
      return { bytes: r.chance(0.9) ? Fe.encodeDescribe({ kind: r.pick(["S", "P"] as const), name: r.pick(NAMES) }) : framed(Fe.F.Describe, new Uint8Array([0x51, 0])) };
    case 7:
      return { bytes: Fe.encodeExecute(r.pick(NAMES), r.pick([0, 0, 1, 2, -1])) };
    case 8:
      return { bytes: r.chance(0.9) ? Fe.encodeClose({ kind: r.pick(["S", "P"] as const), name: r.pick(NAMES) }) : framed(Fe.F.Close, new Uint8Array([0x5a, 0x61, 0])) };
    case 9:
    case 10:
      return { bytes: Fe.SYNC };
    case 11:
      return { bytes: Fe.FLUSH };
    case 12:
      return { bytes: r.pick([Fe.encodeCopyData(utf8.encode(`${2000 + r.int(1000)}\tz\n`)), Fe.encodeCopyData(randomBytes(r, r.int(20))), Fe.COPY_DONE, Fe.encodeCopyFail("fuzz")]) };
    case 13:
      return { bytes: Fe.encodeFunctionCall({ oid: r.pick([1, 1242, r.int(5000)]), argFormats: [0], args: [utf8.encode("1")], resultFormat: 0 }) };
    case 14:
      // A password message after login is fatal (as in Postgres): rarely, so most cases go deeper.
      if (r.chance(0.8)) return { bytes: Fe.encodeQuery(r.pick(SQL)) };
      return { bytes: r.chance(0.5) ? Fe.encodePassword("secret") : Fe.encodeSASLInitialResponse("SCRAM-SHA-256", utf8.encode("n,,n=,r=abc")) };
    default:
      return r.chance(0.3) ? { bytes: Fe.TERMINATE, terminate: true } : { bytes: Fe.encodeQuery(r.pick(SQL)) };
  }
}

/** One malformed message: what a broken or hostile client sends. */
function malformed(r: Rng): Uint8Array {
  const type = r.pick([...Object.values(Fe.F), 0x00, 0x01, 0x7a, 0xff, 0x4a]);
  const body = randomBytes(r, r.int(24));
  switch (r.int(5)) {
    case 0:
      return framed(type, body); // random body of a known or unknown type
    case 1:
      return framed(type, body, r.pick([0, 1, 3, -1, -2147483648])); // length under 4
    case 2:
      return framed(type, body, r.pick([0x7fffffff, 64 * MiB, 4 * MiB + 1])); // giant length, body never comes
    case 3: {
      const good = wellFramed(r).bytes;
      return framed(good[0]!, good.subarray(5, 5 + r.int(Math.max(1, good.length - 5))), good.length - 1); // truncated body, honest length
    }
    default: {
      const good = wellFramed(r).bytes;
      return good.subarray(0, 1 + r.int(good.length)); // cut mid-message: the rest never comes
    }
  }
}

interface Case {
  /** Before the StartupMessage (null: none is sent: the case is about the start-up itself). */
  pre: Uint8Array[];
  login: boolean;
  msgs: Uint8Array[];
  /** The case sends Terminate, a malformed message or breaks start-up: a close is expected then. */
  mayClose: boolean;
  /** The client vanishes after its messages, without waiting for answers. */
  hangUp: boolean;
}

function makeCase(r: Rng): Case {
  if (r.chance(0.12)) {
    // Start-up fuzzing: random packets where the StartupMessage belongs.
    const pre = [
      r.pick([
        Fe.TERMINATE,
        Fe.encodeQuery("select 1"),
        randomBytes(r, 1 + r.int(40)),
        Fe.encodeStartup({ user: origin.user, database: "postgres", [r.pick(["options", "application_name", "x\"; drop", "_pq_.x", "replication"])]: r.pick(["-c search_path=x", "true", "database", "\u0000"]) }),
        Fe.encodeStartup({ user: origin.user, database: r.pick(["nope", "postgres", "template0"]) }, r.pick([Fe.PROTOCOL_3_0, Fe.PROTOCOL_3_2, 2 << 16, 0x12345678])),
        Fe.encodeSSLRequest(),
        Fe.encodeCancelRequest(r.int(1 << 30), randomBytes(r, 4)),
        framed(0, randomBytes(r, 8), r.int(20_000)).subarray(1),
      ]),
    ];
    return { pre, login: false, msgs: [], mayClose: true, hangUp: false };
  }
  const msgs: Uint8Array[] = [];
  let mayClose = false;
  if (r.chance(0.3)) msgs.push(Fe.encodeQuery(r.pick(["begin", "begin isolation level serializable", "start transaction read only"])));
  const n = 1 + r.int(12);
  for (let i = 0; i < n; i++) {
    if (r.chance(0.08)) {
      msgs.push(malformed(r));
      mayClose = true;
      break; // what follows a malformed message is not read as messages anyway
    }
    const m = wellFramed(r);
    msgs.push(m.bytes);
    if (m.terminate) {
      mayClose = true;
      break;
    }
  }
  return { pre: [], login: true, msgs, mayClose, hangUp: r.chance(0.2) };
}

const describe = (c: Case) => [...c.pre, ...c.msgs].map((m) => `${String.fromCharCode(m[0]!)}:${Buffer.from(m.subarray(0, 400)).toString("hex")}`).join(" ");

const BACKEND_TYPES = new Set<number>(Object.values(B));
/** FATAL errors seen, by SQLSTATE and message: printed with the summary, to see where cases end. */
const fatals = new Map<string, number>();

interface Outcome {
  ended: "marker" | "closed" | "quiet";
  problems: string[];
}

/** Runs one case on a fresh connection and checks everything the pooler sent. */
async function runCase(c: Case, marker: string): Promise<Outcome> {
  const problems: string[] = [];
  const frames = createFrames(64 * MiB);
  let closed = false;
  let sawMarker = false;
  let markerDone = false;
  let lastFatal = false;
  let lastByte = Date.now();
  let loggedIn = !c.login;
  let got = "";
  const onMessage = (type: number, body: Uint8Array) => {
    if (got.length < 80) got += String.fromCharCode(type);
    if (!BACKEND_TYPES.has(type)) problems.push(`unknown backend message type ${type}`);
    if (type === B.ErrorResponse || type === B.NoticeResponse) {
      const f = decodeErrorResponse(body) as Record<string, string>;
      if (type === B.ErrorResponse && !/^[0-9A-Z]{5}$/.test(f.C ?? "")) problems.push(`ErrorResponse without a SQLSTATE: ${JSON.stringify(f)}`);
      // XX000 is Postgres' own for some bad input (an unknown type OID); from the pooler (no source fields) it is a bug.
      if (type === B.ErrorResponse && f.C === "XX000" && !f.F) problems.push(`XX000 from the pooler: ${f.M}`);
      if (type === B.ErrorResponse) lastFatal = f.S === "FATAL";
      if (type === B.ErrorResponse && f.S === "FATAL") {
        const k = `${f.C} ${(f.M ?? "").replace(/\d+/g, "N").slice(0, 64)}`;
        fatals.set(k, (fatals.get(k) ?? 0) + 1);
      }
    }
    if (type === B.ReadyForQuery) {
      if (![0x49, 0x54, 0x45].includes(body[0]!)) problems.push(`ReadyForQuery status ${body[0]}`);
      if (!loggedIn) loggedIn = true;
      else if (sawMarker) markerDone = true;
    }
    if (type === B.DataRow && Buffer.from(body).includes(marker)) sawMarker = true;
  };
  let wake = () => {};
  const socket: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port: pooler.port,
    socket: {
      data(_s, d) {
        lastByte = Date.now();
        // The one answer that is not framed: a protocol-2 error for a protocol-2 start-up, as Postgres sends it.
        if (!c.login && d[0] === 0x45 && Buffer.from(d.subarray(1, 7)).toString() === "FATAL:") return void (lastFatal = true);
        try {
          frames.push(d, (type, body) => void onMessage(type, body));
        } catch (e) {
          problems.push(`badly framed answer: ${(e as Error).message}`);
        }
        wake();
      },
      close() {
        closed = true;
        wake();
      },
      error() {
        closed = true;
        wake();
      },
    },
  });
  const waitFor = async (f: () => boolean, quietMs: number) => {
    while (!f() && !closed && Date.now() - lastByte < quietMs) await Promise.race([new Promise<void>((r) => (wake = r)), Bun.sleep(50)]);
  };
  for (const p of c.pre) socket.write(p);
  if (c.login) {
    socket.write(Fe.encodeStartup({ user: origin.user, database: "postgres" }));
    await waitFor(() => loggedIn, 5000);
    if (!loggedIn) problems.push("login did not finish");
    for (const m of c.msgs) socket.write(m);
    if (c.hangUp) {
      // Some clients just vanish, mid-transaction or mid-pipeline: the pool must clean up after them.
      socket.end();
      return { ended: "closed", problems };
    }
    // Whatever state the case left (a COPY, a pipeline, a failed transaction): end it, and ask for a marker.
    socket.write(Buffer.concat([Fe.COPY_DONE, Fe.SYNC, Fe.encodeQuery(`rollback; select '${marker}'`)]));
    // A case that may have cut its last message short is answered by nothing (the rest is awaited): 1.5 s of
    // quiet ends it; any other may wait for a pooled connection behind other cases.
    await waitFor(() => markerDone, c.mayClose ? 1500 : 15_000);
  } else await waitFor(() => false, 800);
  const ended = markerDone ? "marker" : closed ? "closed" : "quiet";
  if (ended === "closed" && !lastFatal && !c.mayClose) problems.push("closed without a FATAL error");
  if (ended === "quiet" && c.login && !c.mayClose) problems.push(`no answer to the marker query (got ${got})`);
  socket.end();
  return { ended, problems };
}

test(`wire fuzz: seed ${SEED}, ${CASES} cases`, async () => {
  const before = await pooler.retained();
  // A bystander: its queries must keep working while the fuzz runs.
  const bystander = new pg.Client({ connectionString: url });
  await bystander.connect();
  let bystanderOk = 0;
  const bystanderErrors: string[] = [];
  let running = true;
  const watching = (async () => {
    while (running) {
      try {
        const res = await bystander.query("select $1::int as n", [bystanderOk]);
        if (res.rows[0]?.n !== bystanderOk) {
          bystanderErrors.push(`query ${bystanderOk} got someone else's answer? ${JSON.stringify({ command: res.command, rowCount: res.rowCount, fields: res.fields.map((f) => f.name), rows: res.rows.slice(0, 3) })}`);
        }
        bystanderOk++;
      } catch (e) {
        bystanderErrors.push((e as Error).message);
      }
      await Bun.sleep(50);
    }
  })();

  const r = rng(SEED);
  const cases = Array.from({ length: CASES }, () => makeCase(r));
  const failures: string[] = [];
  const ends: Record<string, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < cases.length) {
        const i = next++;
        const out = await runCase(cases[i]!, `fuzz-marker-${SEED}-${i}`);
        ends[out.ended] = (ends[out.ended] ?? 0) + 1;
        if (out.problems.length) failures.push(`FUZZ_SEED=${SEED} case ${i}: ${out.problems.join("; ")}\n  ${describe(cases[i]!)}`);
      }
    }),
  );
  running = false;
  await watching;
  await bystander.end();
  console.log(`wire fuzz seed ${SEED}: ${CASES} cases, ended by ${JSON.stringify(ends)}; bystander ran ${bystanderOk} queries`);
  if (process.env.FUZZ_VERBOSE) console.log([...fatals].sort((a, b) => b[1] - a[1]).map(([m, n]) => `  ${n} x FATAL ${m}`).join("\n"));
  expect(failures).toEqual([]);
  expect(bystanderErrors).toEqual([]);
  expect(bystanderOk).toBeGreaterThan(0);

  // Afterwards: no origin connection is left in a transaction, and the whole pool serves at once.
  const direct = new pg.Client({ connectionString: origin.url });
  await direct.connect();
  const stuck = async () => (await direct.query("select count(*)::int as n from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() and state not in ('idle') and query not ilike 'listen%'")).rows[0].n;
  for (let i = 0; i < 50 && (await stuck()) > 0; i++) await Bun.sleep(100);
  expect(await stuck()).toBe(0);
  const clients = await Promise.all(Array.from({ length: POOL_SIZE }, async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query("begin");
    return c;
  }));
  for (const c of clients) {
    const res = await c.query("select current_setting('transaction_read_only') as ro, current_setting('statement_timeout') as st, count(*)::int as n from fuzz_t where id <= 50");
    expect(res.rows[0]).toEqual({ ro: "off", st: "0", n: 50 });
  }
  for (const c of clients) {
    await c.query("rollback");
    await c.end();
  }
  await direct.end();
  const grown = (await pooler.retained()) - before;
  expect(grown).toBeLessThan(96 * MiB);
}, Math.max(600_000, CASES * 250));
