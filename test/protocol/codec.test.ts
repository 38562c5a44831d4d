// Round trip of every protocol message the pooler uses: encode, split by the frame reader, decode.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { describe, expect, test } from "bun:test";
import * as Fe from "../../src/protocol/frontend.ts";
import * as Be from "../../src/protocol/backend.ts";
import { createFrames, readStartup } from "../../src/protocol/frames.ts";
import { ProtocolError } from "../../src/errors.ts";

/** Splits encoded bytes into exactly one message and returns its type and body. */
function one(bytes: Uint8Array): { type: number; body: Uint8Array } {
  const got: Array<{ type: number; body: Uint8Array }> = [];
  createFrames(1 << 20).push(bytes, (type, body) => void got.push({ type, body: body.slice() }));
  expect(got.length).toBe(1);
  return got[0]!;
}
function startupBody(bytes: Uint8Array): Uint8Array {
  const r = readStartup(bytes, 10_000)!;
  expect(r[1]).toBe(bytes.length);
  return r[0];
}
const bytes = (s: string) => new TextEncoder().encode(s);

describe("frontend messages", () => {
  test("StartupMessage, SSLRequest, GSSENCRequest, CancelRequest", () => {
    expect(Fe.decodeStartup(startupBody(Fe.encodeStartup({ user: "u", database: "d", application_name: "é" })))).toEqual({
      kind: "Startup",
      version: Fe.PROTOCOL_3_0,
      params: Object.assign(Object.create(null), { user: "u", database: "d", application_name: "é" }),
    });
    expect(Fe.decodeStartup(startupBody(Fe.encodeStartup({ user: "u" }, Fe.PROTOCOL_3_2))).kind).toBe("Startup");
    expect(Fe.decodeStartup(startupBody(Fe.encodeSSLRequest()))).toEqual({ kind: "SSLRequest" });
    expect(Fe.decodeStartup(startupBody(Fe.encodeGSSENCRequest()))).toEqual({ kind: "GSSENCRequest" });
    const key = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(Fe.decodeStartup(startupBody(Fe.encodeCancelRequest(1234, key)))).toEqual({ kind: "CancelRequest", pid: 1234, key });
  });
  test("Query, Parse, Bind, Describe, Execute, Close", () => {
    let m = one(Fe.encodeQuery("select 'ü'"));
    expect([m.type, Fe.decodeQuery(m.body)]).toEqual([Fe.F.Query, "select 'ü'"]);
    const parse = { name: "s1", query: "select $1::int, $2", paramTypes: [23, 4294967295] };
    m = one(Fe.encodeParse(parse));
    expect([m.type, Fe.decodeParse(m.body)]).toEqual([Fe.F.Parse, parse]);
    const bind = { portal: "p", statement: "s1", paramFormats: [0, 1], params: [bytes("42"), null], resultFormats: [1] };
    m = one(Fe.encodeBind(bind));
    expect([m.type, Fe.decodeBind(m.body)]).toEqual([Fe.F.Bind, bind]);
    expect(Fe.checkBind(m.body)).toEqual([2, 4]);
    expect(Fe.decodeBind(one(Fe.renameBindStatement(m.body, "kv_other")).body)).toEqual({ ...bind, statement: "kv_other" });
    m = one(Fe.encodeDescribe({ kind: "S", name: "s1" }));
    expect([m.type, Fe.decodeDescribe(m.body)]).toEqual([Fe.F.Describe, { kind: "S", name: "s1" }]);
    m = one(Fe.encodeExecute("p", 10));
    expect([m.type, Fe.decodeExecute(m.body)]).toEqual([Fe.F.Execute, { portal: "p", maxRows: 10 }]);
    m = one(Fe.encodeClose({ kind: "P", name: "p" }));
    expect([m.type, Fe.decodeClose(m.body)]).toEqual([Fe.F.Close, { kind: "P", name: "p" }]);
  });
  test("Sync, Flush, Terminate, CopyData, CopyDone, CopyFail", () => {
    expect([one(Fe.SYNC).type, one(Fe.SYNC).body.length]).toEqual([Fe.F.Sync, 0]);
    expect(one(Fe.FLUSH).type).toBe(Fe.F.Flush);
    expect(one(Fe.TERMINATE).type).toBe(Fe.F.Terminate);
    expect(one(Fe.COPY_DONE).type).toBe(Fe.F.CopyDone);
    const d = one(Fe.encodeCopyData(bytes("1\t2\n")));
    expect([d.type, d.body]).toEqual([Fe.F.CopyData, bytes("1\t2\n")]);
    const f = one(Fe.encodeCopyFail("nope"));
    expect([f.type, Fe.decodeCopyFail(f.body)]).toEqual([Fe.F.CopyFail, "nope"]);
  });
  test("PasswordMessage, SASLInitialResponse, SASLResponse", () => {
    expect(Fe.decodePassword(one(Fe.encodePassword("md5abc")).body)).toBe("md5abc");
    expect(Fe.decodeSASLInitialResponse(one(Fe.encodeSASLInitialResponse("SCRAM-SHA-256", bytes("n,,n=*,r=x"))).body)).toEqual({
      mechanism: "SCRAM-SHA-256",
      data: bytes("n,,n=*,r=x"),
    });
    expect(Fe.decodeSASLResponse(one(Fe.encodeSASLResponse(bytes("c=biws"))).body)).toEqual(bytes("c=biws"));
  });
  test("FunctionCall", () => {
    const fc = { oid: 1598, argFormats: [1], args: [bytes("x"), null], resultFormat: 1 };
    expect(Fe.decodeFunctionCall(one(Fe.encodeFunctionCall(fc)).body)).toEqual(fc);
  });
  test("malformed input is a ProtocolError with a SQLSTATE", () => {
    expect(() => Fe.decodeStartup(new Uint8Array([0, 4, 0, 0]))).toThrow(ProtocolError);
    expect(() => Fe.decodeParse(bytes("name-without-nul"))).toThrow("not NUL-terminated");
    expect(() => Fe.checkBind(new Uint8Array([0, 0, 0, 0, 0, 1, 0x7f, 0, 0, 0]))).toThrow(ProtocolError);
    expect(() => Fe.decodeQuery(new Uint8Array([0x41, 0, 0x42]))).toThrow("trailing");
    let code = "";
    try {
      createFrames(100).push(new Uint8Array([0x51, 0, 0, 1, 0]), () => {});
    } catch (e) {
      code = (e as ProtocolError).code;
    }
    expect(code).toBe("54000");
  });
});

describe("prepared-call matcher", () => {
  const bind = Fe.encodeBind({ portal: "", statement: "P_0", paramFormats: [0], params: [bytes("42")], resultFormats: [] });
  const call = (...parts: Uint8Array[]) => Buffer.concat(parts);
  const desc = Fe.encodeDescribe({ kind: "P", name: "" });
  const exec = Fe.encodeExecute("");

  test("Bind, optional Describe of the portal, Execute, Sync: the name and the parameter section", () => {
    const withDescribe = call(bind, desc, exec, Fe.SYNC);
    const m = Fe.matchPreparedCall(withDescribe)!;
    expect(m.describe).toBe(true);
    expect(new TextDecoder().decode(withDescribe.subarray(m.nameStart, m.nameEnd))).toBe("P_0");
    const tail = withDescribe.subarray(m.nameEnd + 1, m.bindEnd);
    const body = bind.subarray(5);
    expect(new Uint8Array(tail)).toEqual(new Uint8Array(body.subarray(Fe.checkBind(body)[1] + 1)));
    expect(Fe.matchPreparedCall(call(bind, exec, Fe.SYNC))!.describe).toBe(false);
  });

  test("renamed for another statement name: the same call otherwise", () => {
    for (const c of [call(bind, desc, exec, Fe.SYNC), call(bind, exec, Fe.SYNC)]) {
      const m = Fe.matchPreparedCall(c)!;
      const renamed = Fe.renamePreparedCall(c, m.nameEnd, bytes("kv_long_name"));
      const expected = Buffer.concat([Fe.renameBindStatement(bind.subarray(5), "kv_long_name"), c.subarray(m.bindEnd)]);
      expect(Buffer.from(renamed).equals(expected)).toBe(true);
      expect(Fe.matchPreparedCall(renamed)!.describe).toBe(m.describe);
    }
  });

  test("an unnamed Parse followed by a call of the unnamed statement: where the Parse ends, and the call", () => {
    const parse = Fe.encodeParse({ name: "", query: "select $1::int", paramTypes: [23] });
    const ubind = Fe.encodeBind({ portal: "", statement: "", paramFormats: [0], params: [bytes("7")], resultFormats: [] });
    const whole = call(parse, ubind, desc, exec, Fe.SYNC);
    const u = Fe.matchUnnamedCall(whole)!;
    expect(u.parseEnd).toBe(parse.length);
    expect(u.call.describe).toBe(true);
    expect(u.call.nameEnd).toBe(6);
    const renamed = Fe.renamePreparedCall(whole.subarray(u.parseEnd), u.call.nameEnd, bytes("kv1"));
    expect(Fe.matchPreparedCall(renamed)).not.toBeNull();
    // Not a match: a named Parse, a call of a named statement after it, or a Parse alone.
    expect(Fe.matchUnnamedCall(call(Fe.encodeParse({ name: "s", query: "select 1", paramTypes: [] }), ubind, exec, Fe.SYNC))).toBeNull();
    expect(Fe.matchUnnamedCall(call(parse, bind, exec, Fe.SYNC))).toBeNull();
    expect(Fe.matchUnnamedCall(call(parse, Fe.SYNC))).toBeNull();
    // And matchPreparedCall itself still refuses the unnamed statement.
    expect(Fe.matchPreparedCall(call(ubind, exec, Fe.SYNC))).toBeNull();
  });

  test("withPortalDescribe puts a Describe of the portal right after the Bind, the rest unchanged", () => {
    const plain = call(bind, exec, Fe.SYNC);
    const described = Fe.withPortalDescribe(plain);
    expect(Buffer.from(described).equals(call(bind, desc, exec, Fe.SYNC))).toBe(true);
    expect(Fe.matchPreparedCall(described)!.describe).toBe(true);
  });

  test("anything else is not a match", () => {
    const unnamed = Fe.encodeBind({ portal: "", statement: "", paramFormats: [], params: [], resultFormats: [] });
    const portal = Fe.encodeBind({ portal: "p", statement: "P_0", paramFormats: [], params: [], resultFormats: [] });
    for (const c of [
      call(bind, exec),
      call(bind, desc, exec, Fe.SYNC, Fe.SYNC),
      call(unnamed, exec, Fe.SYNC),
      call(portal, Fe.encodeExecute("p"), Fe.SYNC),
      call(bind, Fe.encodeExecute("", 10), Fe.SYNC),
      call(bind, Fe.encodeDescribe({ kind: "S", name: "P_0" }), exec, Fe.SYNC),
      call(bind, exec, Fe.FLUSH),
      call(Fe.encodeParse({ name: "P_0", query: "select 1", paramTypes: [] }), bind, exec, Fe.SYNC),
    ]) {
      expect(Fe.matchPreparedCall(c)).toBeNull();
    }
  });
});

describe("backend messages", () => {
  test("Authentication*", () => {
    const cases: Be.Authentication[] = [
      { kind: "Ok" },
      { kind: "CleartextPassword" },
      { kind: "MD5Password", salt: new Uint8Array([1, 2, 3, 4]) },
      { kind: "SASL", mechanisms: ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"] },
      { kind: "SASLContinue", data: bytes("r=abc,s=xyz,i=4096") },
      { kind: "SASLFinal", data: bytes("v=sig") },
    ];
    for (const a of cases) {
      const m = one(Be.encodeAuthentication(a));
      expect([m.type, Be.decodeAuthentication(m.body)]).toEqual([Be.B.Authentication, a]);
    }
  });
  test("ParameterStatus, BackendKeyData, ReadyForQuery, NegotiateProtocolVersion", () => {
    expect(Be.decodeParameterStatus(one(Be.encodeParameterStatus("TimeZone", "UTC")).body)).toEqual({ name: "TimeZone", value: "UTC" });
    const key = new Uint8Array(32).fill(7);
    expect(Be.decodeBackendKeyData(one(Be.encodeBackendKeyData(99, key)).body)).toEqual({ pid: 99, key });
    for (const s of ["I", "T", "E"] as const) expect(Be.decodeReadyForQuery(one(Be.encodeReadyForQuery(s)).body)).toBe(s);
    expect(Be.decodeNegotiateProtocolVersion(one(Be.encodeNegotiateProtocolVersion(0, ["_pq_.a"])).body)).toEqual({ newestMinor: 0, unrecognised: ["_pq_.a"] });
  });
  test("RowDescription, DataRow, CommandComplete, EmptyQueryResponse, PortalSuspended", () => {
    const fields: Be.Field[] = [
      { name: "id", tableOid: 16384, column: 1, typeOid: 23, typeSize: 4, typeModifier: -1, format: 0 },
      { name: "v", tableOid: 0, column: 0, typeOid: 25, typeSize: -1, typeModifier: -1, format: 1 },
    ];
    expect(Be.decodeRowDescription(one(Be.encodeRowDescription(fields)).body)).toEqual(fields);
    const row = [bytes("1"), null, new Uint8Array(0)];
    expect(Be.decodeDataRow(one(Be.encodeDataRow(row)).body)).toEqual(row);
    expect(Be.decodeCommandComplete(one(Be.encodeCommandComplete("SELECT 3")).body)).toBe("SELECT 3");
    expect(one(Be.EMPTY_QUERY_RESPONSE).type).toBe(Be.B.EmptyQueryResponse);
    expect(one(Be.PORTAL_SUSPENDED).type).toBe(Be.B.PortalSuspended);
  });
  test("ErrorResponse, NoticeResponse, NotificationResponse", () => {
    const f = { S: "ERROR", V: "ERROR", C: "22012", M: "division by zero" };
    expect(Be.decodeErrorResponse(one(Be.encodeErrorResponse(f)).body)).toEqual(f);
    expect(Be.decodeErrorResponse(one(Be.errorMessage("08P01", "bad", "FATAL")).body)).toEqual({ S: "FATAL", V: "FATAL", C: "08P01", M: "bad" });
    const n = { S: "NOTICE", C: "00000", M: "hi" };
    expect(one(Be.encodeNoticeResponse(n)).type).toBe(Be.B.NoticeResponse);
    expect(Be.decodeNoticeResponse(one(Be.encodeNoticeResponse(n)).body)).toEqual(n);
    expect(Be.decodeNotificationResponse(one(Be.encodeNotificationResponse(7, "ch", "payload")).body)).toEqual({ pid: 7, channel: "ch", payload: "payload" });
  });
  test("ParseComplete, BindComplete, CloseComplete, NoData, ParameterDescription", () => {
    expect(one(Be.PARSE_COMPLETE).type).toBe(Be.B.ParseComplete);
    expect(one(Be.BIND_COMPLETE).type).toBe(Be.B.BindComplete);
    expect(one(Be.CLOSE_COMPLETE).type).toBe(Be.B.CloseComplete);
    expect(one(Be.NO_DATA).type).toBe(Be.B.NoData);
    expect(Be.decodeParameterDescription(one(Be.encodeParameterDescription([23, 25])).body)).toEqual([23, 25]);
  });
  test("CopyInResponse, CopyOutResponse, CopyBothResponse, CopyData, CopyDone", () => {
    const c = { format: 0, columnFormats: [0, 0] };
    for (const [enc, type] of [
      [Be.encodeCopyInResponse, Be.B.CopyInResponse],
      [Be.encodeCopyOutResponse, Be.B.CopyOutResponse],
      [Be.encodeCopyBothResponse, Be.B.CopyBothResponse],
    ] as const) {
      const m = one(enc(c));
      expect([m.type, Be.decodeCopyResponse(m.body)]).toEqual([type, c]);
    }
    expect(one(Be.encodeBackendCopyData(bytes("x"))).body).toEqual(bytes("x"));
    expect(one(Be.BACKEND_COPY_DONE).type).toBe(Be.B.CopyDone);
  });
});

describe("frame reader", () => {
  test("splits messages that arrive one byte at a time, and large ones in chunks, in order", () => {
    const big = new Uint8Array(100_000).fill(65);
    const stream = Buffer.concat([Fe.encodeQuery("select 1"), Fe.encodeCopyData(big), Fe.SYNC]);
    for (const step of [1, 7, 4096, stream.length]) {
      const got: Array<[number, number]> = [];
      const fr = createFrames(1 << 20);
      for (let i = 0; i < stream.length; i += step) fr.push(stream.subarray(i, i + step), (t, b) => void got.push([t, b.length]));
      expect(got).toEqual([
        [Fe.F.Query, 9],
        [Fe.F.CopyData, 100_000],
        [Fe.F.Sync, 0],
      ]);
    }
  });
  test("stopping holds the current message until resume", () => {
    const fr = createFrames(1 << 20);
    const seen: number[] = [];
    let allow = false;
    const on = (t: number) => (allow || t !== Fe.F.Bind ? void seen.push(t) : false);
    fr.push(Buffer.concat([Fe.SYNC, Fe.encodeBind({ portal: "", statement: "", paramFormats: [], params: [], resultFormats: [] }), Fe.FLUSH]), on);
    expect(seen).toEqual([Fe.F.Sync]);
    fr.push(Fe.TERMINATE, on);
    expect(seen).toEqual([Fe.F.Sync]);
    allow = true;
    fr.resume(on);
    expect(seen).toEqual([Fe.F.Sync, Fe.F.Bind, Fe.F.Flush, Fe.F.Terminate]);
  });
});

describe("frame reader unshift", () => {
  test("a message put back runs before held and partial bytes", () => {
    const fr = createFrames(1 << 20);
    const seen: number[] = [];
    const q = Fe.encodeQuery("select 1");
    const sync = Fe.SYNC;
    // A partial Flush is pending when the Query is put back.
    fr.push(Fe.FLUSH.subarray(0, 3), (t) => void seen.push(t));
    fr.unshift(q);
    fr.push(Buffer.concat([Fe.FLUSH.subarray(3), sync]), (t) => void seen.push(t));
    fr.resume((t) => void seen.push(t));
    expect(seen).toEqual([Fe.F.Query, Fe.F.Flush, Fe.F.Sync]);
  });
});
