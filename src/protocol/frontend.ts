// Frontend (client -> server) messages: one encoder and one decoder each.
// https://www.postgresql.org/docs/current/protocol-message-formats.html
import { createReader, createWriter } from "./bytes.ts";
import { ProtocolError } from "../errors.ts";

export const PROTOCOL_3_0 = 196608;
export const PROTOCOL_3_2 = 196610;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;

export const F = {
  Query: 0x51, // Q
  Parse: 0x50, // P
  Bind: 0x42, // B
  Describe: 0x44, // D
  Execute: 0x45, // E
  Close: 0x43, // C
  Sync: 0x53, // S
  Flush: 0x48, // H
  Terminate: 0x58, // X
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  FunctionCall: 0x46, // F
  Password: 0x70, // p: PasswordMessage, SASLInitialResponse and SASLResponse share it
} as const;

/** The first packet of a connection, which has no type byte. */
export type StartupPacket =
  | { kind: "Startup"; version: number; params: Record<string, string> }
  | { kind: "SSLRequest" }
  | { kind: "GSSENCRequest" }
  | { kind: "CancelRequest"; pid: number; key: Uint8Array };

export interface Parse {
  name: string;
  query: string;
  paramTypes: number[];
}
export interface Bind {
  portal: string;
  statement: string;
  paramFormats: number[];
  params: Array<Uint8Array | null>;
  resultFormats: number[];
}

const w = createWriter();

export function encodeStartup(params: Record<string, string>, version = PROTOCOL_3_0): Uint8Array {
  w.begin().i32(version);
  for (const [k, v] of Object.entries(params)) w.cstr(k).cstr(v);
  return w.i8(0).end().take();
}
export const encodeSSLRequest = () => w.begin().i32(SSL_REQUEST_CODE).end().take();
export const encodeGSSENCRequest = () => w.begin().i32(GSSENC_REQUEST_CODE).end().take();
export const encodeCancelRequest = (pid: number, key: Uint8Array) => w.begin().i32(CANCEL_REQUEST_CODE).i32(pid).bytes(key).end().take();

/** Decodes the body (after the length) of the first packet. */
export function decodeStartup(body: Uint8Array): StartupPacket {
  const r = createReader(body);
  const code = r.i32();
  if (code === SSL_REQUEST_CODE) return r.done("SSLRequest"), { kind: "SSLRequest" };
  if (code === GSSENC_REQUEST_CODE) return r.done("GSSENCRequest"), { kind: "GSSENCRequest" };
  if (code === CANCEL_REQUEST_CODE) {
    // Postgres closes without an answer on a malformed cancel: nobody is listening for one.
    if (body.length < 12 || body.length > 260) throw new ProtocolError(`invalid length of query cancel packet: ${body.length + 4}`, "08P01", "close");
    const pid = r.i32();
    return { kind: "CancelRequest", pid, key: r.rest() };
  }
  const major = code >>> 16;
  // A protocol-2 client could not read an ErrorResponse: Postgres answers it in protocol 2's form.
  if (major !== 3) throw new ProtocolError(`unsupported frontend protocol ${major}.${code & 0xffff}: server supports 3.0 to 3.2`, "0A000", major < 3 ? "v2" : "error");
  // Postgres' own checks and words: name/value pairs, then one terminating NUL as the last byte.
  const layout = () => new ProtocolError("invalid startup packet layout: expected terminator as last byte");
  if (body[body.length - 1] !== 0) throw layout();
  const params: Record<string, string> = Object.create(null);
  for (;;) {
    if (r.remaining() === 0) throw layout();
    const k = r.cstr();
    if (k === "") break;
    if (r.remaining() === 0) throw layout();
    params[k] = r.cstr();
  }
  if (r.remaining() !== 0) throw layout();
  return { kind: "Startup", version: code, params };
}

export const encodeQuery = (sql: string) => w.begin(F.Query).cstr(sql).end().take();
export const decodeQuery = (body: Uint8Array) => {
  const r = createReader(body);
  const sql = r.cstr();
  r.done("Query");
  return sql;
};

export function encodeParse(m: Parse): Uint8Array {
  w.begin(F.Parse).cstr(m.name).cstr(m.query).i16(m.paramTypes.length);
  for (const t of m.paramTypes) w.i32(t);
  return w.end().take();
}
export function decodeParse(body: Uint8Array): Parse {
  const r = createReader(body);
  const name = r.cstr();
  const query = r.cstr();
  const n = r.u16();
  const paramTypes: number[] = [];
  for (let i = 0; i < n; i++) paramTypes.push(r.i32() >>> 0);
  r.done("Parse");
  return { name, query, paramTypes };
}

export function encodeBind(m: Bind): Uint8Array {
  w.begin(F.Bind).cstr(m.portal).cstr(m.statement).i16(m.paramFormats.length);
  for (const f of m.paramFormats) w.i16(f);
  w.i16(m.params.length);
  for (const p of m.params) p === null ? w.i32(-1) : w.i32(p.length).bytes(p);
  w.i16(m.resultFormats.length);
  for (const f of m.resultFormats) w.i16(f);
  return w.end().take();
}
export function decodeBind(body: Uint8Array): Bind {
  const r = createReader(body);
  const portal = r.cstr();
  const statement = r.cstr();
  const paramFormats: number[] = [];
  for (let i = 0, n = r.u16(); i < n; i++) paramFormats.push(r.i16());
  const params: Array<Uint8Array | null> = [];
  for (let i = 0, n = r.u16(); i < n; i++) {
    const len = r.i32();
    if (len < -1) throw new ProtocolError(`Bind parameter ${i + 1} has invalid length ${len}`);
    params.push(len === -1 ? null : r.bytes(len));
  }
  const resultFormats: number[] = [];
  for (let i = 0, n = r.u16(); i < n; i++) resultFormats.push(r.i16());
  r.done("Bind");
  return { portal, statement, paramFormats, params, resultFormats };
}

/**
 * Validates a Bind body's structure without copying it (the pooler forwards Bind bytes as they are, so a
 * malformed one must be caught here rather than break the origin connection). Returns the statement name's
 * [start, end) offsets.
 */
export function checkBind(body: Uint8Array): [number, number] {
  const p = body.indexOf(0);
  if (p < 0) throw new ProtocolError("Bind message is malformed: portal or statement name is not NUL-terminated");
  return [p + 1, checkBindAt(body, p + 1, body.length)];
}

/**
 * checkBind for a Bind body that starts at the statement name, buf[start, end): returns the offset of the
 * statement name's NUL, with no allocation (the pooler's per-query path).
 */
export function checkBindAt(buf: Uint8Array, start: number, end: number): number {
  const st = buf.indexOf(0, start);
  if (st < 0 || st >= end) throw new ProtocolError("Bind message is malformed: portal or statement name is not NUL-terminated");
  let at = st + 1;
  // Counts are unsigned 16-bit, as Postgres reads them: up to 65,535 parameters.
  const u16 = () => {
    if (at + 2 > end) throw new ProtocolError("Bind message is truncated");
    const v = (buf[at]! << 8) | buf[at + 1]!;
    at += 2;
    return v;
  };
  const nf = u16();
  if (at + 2 * nf > end) throw new ProtocolError("Bind message is truncated");
  at += 2 * nf;
  const np = u16();
  if (nf > 1 && nf !== np) throw new ProtocolError(`Bind has ${np} parameters but ${nf} parameter formats`);
  for (let i = 0; i < np; i++) {
    if (at + 4 > end) throw new ProtocolError("Bind message is truncated");
    const len = (buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!;
    at += 4;
    if (len < -1 || at + Math.max(0, len) > end) throw new ProtocolError(`Bind parameter ${i + 1} has length ${len}, beyond the message`);
    if (len > 0) at += len;
  }
  const nr = u16();
  if (at + 2 * nr !== end) throw new ProtocolError("Bind message has a wrong result-format section");
  return st;
}

/** Offsets of the zero bytes in Execute("", 0) followed by Sync, from the Execute's type byte. */
const EXECUTE_SYNC_ZEROS = [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13];

/**
 * One Bind of a named statement to the unnamed portal, an optional Describe of that portal, an Execute of it
 * with no row limit and a Sync, filling exactly `buf`: a prepared-statement call as libpq, pg and most drivers
 * send it. Returns the statement name's [start, end) and where the Bind ends (its parameter section is
 * [nameEnd + 1, bindEnd)), or null for anything else. The parameter section is not validated.
 */
export function matchPreparedCall(buf: Uint8Array, unnamed = false): { nameStart: number; nameEnd: number; bindEnd: number; describe: boolean } | null {
  const n = buf.length;
  if (n < 6 + 4 + 10 + 5 || buf[0] !== F.Bind || buf[5] !== 0) return null;
  const bindEnd = 1 + (((buf[1]! << 24) | (buf[2]! << 16) | (buf[3]! << 8) | buf[4]!) >>> 0);
  if (bindEnd + 15 > n) return null;
  const nameEnd = buf.indexOf(0, 6);
  if ((unnamed ? nameEnd !== 6 : nameEnd <= 6) || nameEnd >= bindEnd) return null;
  let at = bindEnd;
  const describe = buf[at] === F.Describe;
  if (describe) {
    if (buf[at + 1] !== 0 || buf[at + 2] !== 0 || buf[at + 3] !== 0 || buf[at + 4] !== 6 || buf[at + 5] !== 0x50 || buf[at + 6] !== 0) return null;
    at += 7;
  }
  if (at + 15 !== n || buf[at] !== F.Execute || buf[at + 4] !== 9 || buf[at + 10] !== F.Sync || buf[at + 14] !== 4) return null;
  for (const i of EXECUTE_SYNC_ZEROS) if (buf[at + i] !== 0) return null;
  return { nameStart: 6, nameEnd, bindEnd, describe };
}

/** Describe of the unnamed portal. */
export const DESCRIBE_PORTAL = new Uint8Array([0x44, 0, 0, 0, 6, 0x50, 0]);

/** A call that starts with a Bind, with a Describe of the unnamed portal put right after the Bind. */
export function withPortalDescribe(call: Uint8Array): Uint8Array {
  const bindEnd = 1 + (((call[1]! << 24) | (call[2]! << 16) | (call[3]! << 8) | call[4]!) >>> 0);
  const out = new Uint8Array(call.length + DESCRIBE_PORTAL.length);
  out.set(call.subarray(0, bindEnd));
  out.set(DESCRIBE_PORTAL, bindEnd);
  out.set(call.subarray(bindEnd), bindEnd + DESCRIBE_PORTAL.length);
  return out;
}

/**
 * A Parse of the unnamed statement followed by a call of it (Bind of the unnamed statement to the unnamed
 * portal, optional Describe, Execute, Sync), filling exactly `buf`: how node-postgres sends a parameterised
 * query without a name, and postgres.js with prepare: false. Returns where the Parse ends and the call's
 * offsets relative to that point (as matchPreparedCall gives them), or null for anything else.
 */
export function matchUnnamedCall(buf: Uint8Array): { parseEnd: number; call: { nameStart: number; nameEnd: number; bindEnd: number; describe: boolean } } | null {
  if (buf.length < 8 || buf[0] !== F.Parse || buf[5] !== 0) return null;
  const parseEnd = 1 + (((buf[1]! << 24) | (buf[2]! << 16) | (buf[3]! << 8) | buf[4]!) >>> 0);
  if (parseEnd >= buf.length || parseEnd < 9) return null;
  const call = matchPreparedCall(buf.subarray(parseEnd), true);
  return call ? { parseEnd, call } : null;
}

/**
 * A prepared call as matched by matchPreparedCall, in one new buffer, with the Bind naming statement `name`
 * (its encoded bytes) instead; the parameters and the messages after the Bind are copied unchanged.
 */
export function renamePreparedCall(buf: Uint8Array, nameEnd: number, name: Uint8Array): Uint8Array {
  const rest = buf.length - nameEnd; // from the name's NUL: parameters, then Describe, Execute, Sync
  const out = new Uint8Array(6 + name.length + rest);
  const bindLen = out.length - 1 - (buf.length - (((buf[1]! << 24) | (buf[2]! << 16) | (buf[3]! << 8) | buf[4]!) + 1));
  out[0] = F.Bind;
  out[1] = bindLen >>> 24;
  out[2] = (bindLen >>> 16) & 0xff;
  out[3] = (bindLen >>> 8) & 0xff;
  out[4] = bindLen & 0xff;
  out.set(name, 6);
  out.set(buf.subarray(nameEnd), 6 + name.length);
  return out;
}

const utf8 = new TextEncoder();

/** A Bind message (type and length included) for another statement name, from a Bind body; the rest is copied. */
export function renameBindStatement(body: Uint8Array, statement: string): Uint8Array {
  const p = body.indexOf(0);
  const st = body.indexOf(0, p + 1);
  const name = utf8.encode(statement);
  const out = new Uint8Array(5 + p + 1 + name.length + 1 + (body.length - st - 1));
  new DataView(out.buffer).setInt32(1, out.length - 1);
  out[0] = F.Bind;
  out.set(body.subarray(0, p + 1), 5);
  out.set(name, 5 + p + 1);
  out.set(body.subarray(st), 5 + p + 1 + name.length);
  return out;
}

/** Describe and Close share a shape: 'S' for a statement or 'P' for a portal, and a name. */
export interface Target {
  kind: "S" | "P";
  name: string;
}
function decodeTarget(body: Uint8Array, what: string): Target {
  const r = createReader(body);
  const k = r.i8();
  if (k !== 0x53 && k !== 0x50) throw new ProtocolError(`${what} target must be 'S' or 'P', got ${k}`);
  const name = r.cstr();
  r.done(what);
  return { kind: k === 0x53 ? "S" : "P", name };
}
export const encodeDescribe = (t: Target) => w.begin(F.Describe).i8(t.kind.charCodeAt(0)).cstr(t.name).end().take();
export const decodeDescribe = (body: Uint8Array) => decodeTarget(body, "Describe");
export const encodeClose = (t: Target) => w.begin(F.Close).i8(t.kind.charCodeAt(0)).cstr(t.name).end().take();
export const decodeClose = (body: Uint8Array) => decodeTarget(body, "Close");

export const encodeExecute = (portal: string, maxRows = 0) => w.begin(F.Execute).cstr(portal).i32(maxRows).end().take();
export function decodeExecute(body: Uint8Array): { portal: string; maxRows: number } {
  const r = createReader(body);
  const portal = r.cstr();
  const maxRows = r.i32();
  r.done("Execute");
  return { portal, maxRows };
}

// Messages without a body are built once.
export const SYNC = w.begin(F.Sync).end().take();
export const FLUSH = w.begin(F.Flush).end().take();
export const TERMINATE = w.begin(F.Terminate).end().take();
export const COPY_DONE = w.begin(F.CopyDone).end().take();

export const encodeCopyData = (data: Uint8Array) => w.begin(F.CopyData).bytes(data).end().take();
export const encodeCopyFail = (message: string) => w.begin(F.CopyFail).cstr(message).end().take();
export const decodeCopyFail = (body: Uint8Array) => {
  const r = createReader(body);
  const m = r.cstr();
  r.done("CopyFail");
  return m;
};

export const encodePassword = (password: string) => w.begin(F.Password).cstr(password).end().take();
export const decodePassword = (body: Uint8Array) => {
  const r = createReader(body);
  const p = r.cstr();
  r.done("PasswordMessage");
  return p;
};
export function encodeSASLInitialResponse(mechanism: string, data: Uint8Array): Uint8Array {
  return w.begin(F.Password).cstr(mechanism).i32(data.length).bytes(data).end().take();
}
export function decodeSASLInitialResponse(body: Uint8Array): { mechanism: string; data: Uint8Array } {
  const r = createReader(body);
  const mechanism = r.cstr();
  const len = r.i32();
  const data = len === -1 ? new Uint8Array(0) : r.bytes(len);
  r.done("SASLInitialResponse");
  return { mechanism, data };
}
export const encodeSASLResponse = (data: Uint8Array) => w.begin(F.Password).bytes(data).end().take();
export const decodeSASLResponse = (body: Uint8Array) => body;

export interface FunctionCall {
  oid: number;
  argFormats: number[];
  args: Array<Uint8Array | null>;
  resultFormat: number;
}
export function encodeFunctionCall(m: FunctionCall): Uint8Array {
  w.begin(F.FunctionCall).i32(m.oid).i16(m.argFormats.length);
  for (const f of m.argFormats) w.i16(f);
  w.i16(m.args.length);
  for (const a of m.args) a === null ? w.i32(-1) : w.i32(a.length).bytes(a);
  return w.i16(m.resultFormat).end().take();
}
export function decodeFunctionCall(body: Uint8Array): FunctionCall {
  const r = createReader(body);
  const oid = r.i32() >>> 0;
  const argFormats: number[] = [];
  for (let i = 0, n = r.u16(); i < n; i++) argFormats.push(r.i16());
  const args: Array<Uint8Array | null> = [];
  for (let i = 0, n = r.u16(); i < n; i++) {
    const len = r.i32();
    if (len < -1) throw new ProtocolError(`FunctionCall argument ${i + 1} has invalid length ${len}`);
    args.push(len === -1 ? null : r.bytes(len));
  }
  const resultFormat = r.i16();
  r.done("FunctionCall");
  return { oid, argFormats, args, resultFormat };
}
