// Start-up and login bounds, against a real Postgres beside the pooler: invalid start-up packets are answered
// byte for byte as Postgres answers them, messages before login are small, clients in start-up are bounded,
// and failed logins are answered late (auth_delay) while still counting in that bound.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import { decodeAuthentication } from "../../src/protocol/backend.ts";
import { encodeSASLInitialResponse, encodeSASLResponse, encodeStartup, encodeSSLRequest, TERMINATE } from "../../src/protocol/frontend.ts";
import { createScramClient } from "../../src/pool/scram.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { errorOf, rawConnect } from "./raw.ts";

let origin: TestPostgres;
let fx: PoolerFixture;
beforeAll(async () => {
  origin = await startTestPostgres();
  fx = await startPoolerFixture({ pgMaxStartingClients: 4, authFailureDelayMs: 400 }, undefined, origin);
}, 120_000);
afterAll(async () => {
  await fx?.stop();
  await origin?.destroy();
}, 60_000);

/** Everything a server sends until it closes (or `ms` pass), for bytes written on a fresh connection. */
async function answer(port: number, bytes: Uint8Array, ms = 3000): Promise<{ bytes: string; closed: boolean }> {
  let got = Buffer.alloc(0);
  let closed = false;
  let done = () => {};
  const finished = new Promise<void>((r) => (done = r));
  const s = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        got = Buffer.concat([got, d]);
      },
      close() {
        closed = true;
        done();
      },
      error() {
        closed = true;
        done();
      },
    },
  });
  s.write(bytes);
  await Promise.race([finished, Bun.sleep(ms)]);
  s.end();
  return { bytes: got.toString("latin1"), closed };
}

const be32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
/** The fields Postgres adds that the pooler has no equivalent of (source file, line, routine) are ignored. */
const comparable = (wire: string) => wire.replace(/F[^\0]*\0L\d+\0R[^\0]*\0/, "").replace(/E[\s\S]{4}SFATAL/, "E....SFATAL");

describe("invalid start-up packets are answered as Postgres answers them", () => {
  const cases: Array<[string, Uint8Array]> = [
    ["a Terminate before the StartupMessage", TERMINATE],
    ["a length under 8", Buffer.concat([be32(4)])],
    ["a length over 10,000", Buffer.concat([be32(20_000), Buffer.alloc(64)])],
    ["a CancelRequest without a key", Buffer.concat([be32(12), be32(80877102), be32(1)])],
    ["protocol 2.0", Buffer.concat([be32(8), be32(2 << 16)])],
    ["protocol 4.0", Buffer.concat([be32(8), be32(4 << 16)])],
    ["a StartupMessage without its terminator", Buffer.concat([be32(14), be32(3 << 16), Buffer.from("user\0a")])],
    ["a StartupMessage with no parameters at all", Buffer.concat([be32(8), be32(3 << 16)])],
    ["a name without a value", Buffer.concat([be32(14), be32(3 << 16), Buffer.from("user\0\0")])],
    ["no user", Buffer.concat([be32(9), be32(3 << 16), Buffer.from([0])])],
    ["unencrypted bytes right behind an SSLRequest", Buffer.concat([encodeSSLRequest(), Buffer.from("xxxxxxxx")])],
  ];
  for (const [what, bytes] of cases) {
    test(what, async () => {
      const direct = await answer(origin.port, bytes);
      const pooled = await answer(fx.pooler.port, bytes);
      expect(pooled.closed).toBe(true);
      expect(direct.closed).toBe(true);
      expect(comparable(pooled.bytes)).toBe(comparable(direct.bytes));
    });
  }

  test("node-postgres' connect(); end() ends quietly: no error event, no unhandled rejection", async () => {
    for (const url of [origin.url, fx.url()]) {
      const errors: Error[] = [];
      const c = new pg.Client({ connectionString: url });
      c.on("error", (e) => errors.push(e));
      // Against Postgres this promise never settles; an ErrorResponse made it reject, unhandled in such code.
      void c.connect().catch((e: Error) => errors.push(e));
      await c.end();
      await Bun.sleep(300);
      expect(errors.map(String)).toEqual([]);
    }
    // The pooler still serves.
    const ok = new pg.Client({ connectionString: fx.url() });
    await ok.connect();
    expect((await ok.query("select 1 as n")).rows).toEqual([{ n: 1 }]);
    await ok.end();
  });
});

describe("before login", () => {
  test("a message past KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES is refused at its header, not read", async () => {
    const r = await rawConnect(fx.pooler.port);
    r.write(encodeStartup({ user: origin.user, database: "postgres" }));
    await r.read((m) => m.type === "R");
    const header = new Uint8Array([0x70, 0x04, 0, 0, 0]); // a 64 MiB SASL message, announced
    r.write(header);
    const msgs = await r.read((m) => m.type === "E");
    const err = errorOf(msgs.at(-1)!);
    expect(err.C).toBe("54000");
    expect(err.M).toContain("KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES");
    await r.closed();
  });

  test("a start-up packet is bounded at 10,000 bytes by default, as in Postgres", async () => {
    const big = encodeStartup({ user: origin.user, database: "postgres", application_name: "x".repeat(12_000) });
    expect(await answer(fx.pooler.port, big)).toEqual({ bytes: "", closed: true });
  });

  test("clients in start-up are bounded: past KVDRIVE_PG_MAX_STARTING_CLIENTS a new one gets 53300; a login frees its slot", async () => {
    const idle = await Promise.all([1, 2, 3, 4].map(() => rawConnect(fx.pooler.port)));
    await Bun.sleep(100);
    const turned = await rawConnect(fx.pooler.port);
    const err = errorOf((await turned.read((m) => m.type === "E")).at(-1)!);
    expect(err.C).toBe("53300");
    expect(err.M).toContain("too many clients in start-up");
    expect(err.M).toContain("KVDRIVE_PG_MAX_STARTING_CLIENTS");
    await turned.closed();
    // Logging in frees a slot: one of the four logs in, and a fifth connection may start.
    const first = idle[0]!;
    first.write(encodeStartup({ user: origin.user, database: "postgres" }));
    await first.read((m) => m.type === "R");
    for (const r of idle.slice(1)) r.end();
    await Bun.sleep(100);
    const c = new pg.Client({ connectionString: fx.url() });
    await c.connect();
    expect((await c.query("select 2 as n")).rows).toEqual([{ n: 2 }]);
    await c.end();
    first.end();
  });

  test("a failed login is answered after KVDRIVE_AUTH_FAILURE_DELAY_MS and holds a start-up slot meanwhile", async () => {
    const started = performance.now();
    const fails = await Promise.all([1, 2, 3, 4].map(async () => {
      const r = await rawConnect(fx.pooler.port);
      r.write(encodeStartup({ user: origin.user, database: "postgres" }));
      await r.read((m) => m.type === "R");
      const scram = createScramClient("wrong password");
      r.write(encodeSASLInitialResponse("SCRAM-SHA-256", new TextEncoder().encode(scram.first())));
      const cont = decodeAuthentication((await r.read((m) => m.type === "R")).at(-1)!.body);
      if (cont.kind !== "SASLContinue") throw new Error(`expected SASLContinue, got ${cont.kind}`);
      r.write(encodeSASLResponse(new TextEncoder().encode(scram.respond(new TextDecoder().decode(cont.data)))));
      return r;
    }));
    // While those four wait out their delay, no fifth client may start.
    const turned = await rawConnect(fx.pooler.port);
    const refused = (await turned.read((m) => m.type === "E")).at(-1)!;
    expect(errorOf(refused).C).toBe("53300");
    for (const r of fails) {
      const e = errorOf((await r.read((m) => m.type === "E")).at(-1)!);
      expect(e.C).toBe("28P01");
      await r.closed();
    }
    expect(performance.now() - started).toBeGreaterThanOrEqual(400 * 0.9); // the delay is a floor, never a ceiling
  });

  test("a wrong password over SCRAM (pg) gets 28P01 no sooner than the delay", async () => {
    const started = performance.now();
    const e = await new pg.Client({ connectionString: fx.url("postgres", origin.user, "not-the-password") }).connect().catch((x) => x);
    expect(e.code).toBe("28P01");
    expect(performance.now() - started).toBeGreaterThanOrEqual(400 * 0.9);
  });
});
