// Extended-protocol pipelines over a raw socket, on a pool of one connection shared by two clients:
// synthetic and swallowed answers keep the order, errors discard up to Sync, names never leak between clients.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { decodeDataRow, decodeErrorResponse } from "../../src/protocol/backend.ts";
import { COPY_DONE, encodeBind, encodeClose, encodeCopyData, encodeDescribe, encodeExecute, encodeParse, encodeQuery, encodeStartup, FLUSH, SYNC } from "../../src/protocol/frontend.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { rawConnect, type RawConn, type RawMessage } from "./raw.ts";

let f: PoolerFixture;
beforeAll(async () => {
  f = await startPoolerFixture({ pgAuth: "trust", poolSize: 1, poolMaxPreparedStatements: 2 });
}, 60_000);
afterAll(async () => {
  await f.stop();
}, 60_000);

const t = (s: string) => new TextEncoder().encode(s);
const types = (ms: RawMessage[]) => ms.map((m) => m.type).join("");
const values = (ms: RawMessage[]) => ms.filter((m) => m.type === "D").map((m) => new TextDecoder().decode(decodeDataRow(m.body)[0]!));
const bindExec = (stmt: string, ...params: string[]) => [encodeBind({ portal: "", statement: stmt, paramFormats: [], params: params.map(t), resultFormats: [] }), encodeExecute("")];
async function session(): Promise<RawConn> {
  const r = await rawConnect(f.pooler.port);
  r.write(encodeStartup({ user: f.pg.user, database: "postgres" }));
  await r.read((m) => m.type === "Z");
  return r;
}
const send = (r: RawConn, ...msgs: Uint8Array[]) => r.write(Buffer.concat(msgs));
const untilZ = (r: RawConn) => r.read((m) => m.type === "Z");

test("pipelined binds, an error mid-pipeline, Close, and per-client statement names", async () => {
  const a = await session();
  const b = await session();
  send(a, encodeParse({ name: "s1", query: "select $1::int", paramTypes: [] }), encodeParse({ name: "s2", query: "select (10 / $1::int)::text", paramTypes: [] }), SYNC);
  expect(types(await untilZ(a))).toBe("11Z");

  send(a, ...bindExec("s1", "5"), ...bindExec("s2", "0"), ...bindExec("s1", "6"), SYNC);
  const r1 = await untilZ(a);
  expect(types(r1)).toBe("2DCEZ"); // 10/0 is folded while planning at Bind, so Bind fails
  expect(values(r1)).toEqual(["5"]);
  expect(decodeErrorResponse(r1.find((m) => m.type === "E")!.body).C).toBe("22012");

  // An error while executing (not planning): the rest of the pipeline is discarded up to Sync.
  send(a, encodeParse({ name: "s3", query: "select 10 / (case when random() >= 0 then $1::int end)", paramTypes: [] }), ...bindExec("s1", "1"), ...bindExec("s3", "0"), ...bindExec("s1", "2"), SYNC);
  expect(types(await untilZ(a))).toBe("12DC2EZ");

  // b uses the same connection and the same name for another statement.
  send(b, encodeParse({ name: "s1", query: "select 'b:' || $1", paramTypes: [] }), ...bindExec("s1", "x"), SYNC);
  const rb = await untilZ(b);
  expect(types(rb)).toBe("12DCZ");
  expect(values(rb)).toEqual(["b:x"]);

  send(a, ...bindExec("s1", "7"), ...bindExec("s2", "5"), SYNC);
  const r2 = await untilZ(a);
  expect(types(r2)).toBe("2DC2DCZ");
  expect(values(r2)).toEqual(["7", "2"]);

  send(a, encodeClose({ kind: "S", name: "s1" }), SYNC);
  expect(types(await untilZ(a))).toBe("3Z");
  send(a, ...bindExec("s1", "1"), SYNC);
  const r3 = await untilZ(a);
  expect(types(r3)).toBe("EZ");
  expect(decodeErrorResponse(r3[0]!.body).C).toBe("26000");
  a.end();
  b.end();
});

test("Describe of a statement, Flush without Sync, and LRU eviction past KVDRIVE_POOL_PREPARED_STATEMENTS", async () => {
  const a = await session();
  for (let i = 0; i < 5; i++) send(a, encodeParse({ name: `e${i}`, query: `select ${i} + $1::int as n`, paramTypes: [23] }));
  send(a, SYNC);
  expect(types(await untilZ(a))).toBe("11111Z");
  // Only two statements fit per connection: using all five forces evictions (Close) and re-Parses, unseen.
  for (let round = 0; round < 2; round++) {
    send(a, ...[0, 1, 2, 3, 4].flatMap((i) => bindExec(`e${i}`, String(i * 10))), SYNC);
    const r = await untilZ(a);
    expect(types(r)).toBe("2DC".repeat(5) + "Z");
    expect(values(r)).toEqual(["0", "11", "22", "33", "44"]);
  }
  send(a, encodeDescribe({ kind: "S", name: "e3" }), FLUSH);
  const d = await a.read((m) => m.type === "T");
  expect(types(d)).toBe("tT");
  send(a, SYNC);
  expect(types(await untilZ(a))).toBe("Z");
  a.end();
});

test("simple queries with several statements and an error in the middle", async () => {
  const a = await session();
  send(a, encodeQuery("select 1; select 1/0; select 3"));
  const r = await untilZ(a);
  expect(types(r)).toBe("TDCEZ");
  send(a, encodeQuery(""));
  expect(types(await untilZ(a))).toBe("IZ");
  a.end();
});

test("COPY FROM STDIN through the extended protocol, with the Sync sent before the data", async () => {
  const a = await session();
  send(a, encodeQuery("create table pipe_copy (x int)"));
  await untilZ(a);
  send(a, encodeParse({ name: "", query: "copy pipe_copy from stdin", paramTypes: [] }), encodeBind({ portal: "", statement: "", paramFormats: [], params: [], resultFormats: [] }), encodeExecute(""), SYNC);
  const g = await a.read((m) => m.type === "G");
  expect(types(g)).toBe("12G");
  send(a, encodeCopyData(t("1\n2\n3\n")), COPY_DONE, SYNC);
  expect(types(await untilZ(a))).toBe("CZ");
  send(a, encodeQuery("select count(*) from pipe_copy"));
  expect(values(await untilZ(a))).toEqual(["3"]);
  a.end();
});

test("NoticeResponse reaches the client", async () => {
  const a = await session();
  send(a, encodeQuery("do $$ begin raise notice 'hello from plpgsql'; end $$"));
  const r = await untilZ(a);
  expect(types(r)).toBe("NCZ");
  expect(decodeErrorResponse(r[0]!.body).M).toBe("hello from plpgsql");
  a.end();
});
