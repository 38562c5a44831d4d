// Backend (server -> client) messages: one encoder and one decoder each.
// https://www.postgresql.org/docs/current/protocol-message-formats.html
import { createReader, createWriter } from "./bytes.ts";
import { ProtocolError } from "../errors.ts";

export const B = {
  Authentication: 0x52, // R
  ParameterStatus: 0x53, // S
  BackendKeyData: 0x4b, // K
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
  DataRow: 0x44, // D
  CommandComplete: 0x43, // C
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParseComplete: 0x31, // 1
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  NoData: 0x6e, // n
  ParameterDescription: 0x74, // t
  PortalSuspended: 0x73, // s
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  NegotiateProtocolVersion: 0x76, // v
  FunctionCallResponse: 0x56, // V
} as const;

export const AUTH = { Ok: 0, CleartextPassword: 3, MD5Password: 5, SASL: 10, SASLContinue: 11, SASLFinal: 12 } as const;

export type Authentication =
  | { kind: "Ok" }
  | { kind: "CleartextPassword" }
  | { kind: "MD5Password"; salt: Uint8Array }
  | { kind: "SASL"; mechanisms: string[] }
  | { kind: "SASLContinue"; data: Uint8Array }
  | { kind: "SASLFinal"; data: Uint8Array };

const w = createWriter();

export function encodeAuthentication(a: Authentication): Uint8Array {
  w.begin(B.Authentication).i32(AUTH[a.kind]);
  if (a.kind === "MD5Password") w.bytes(a.salt);
  else if (a.kind === "SASL") {
    for (const m of a.mechanisms) w.cstr(m);
    w.i8(0);
  } else if (a.kind === "SASLContinue" || a.kind === "SASLFinal") w.bytes(a.data);
  return w.end().take();
}
export function decodeAuthentication(body: Uint8Array): Authentication {
  const r = createReader(body);
  const code = r.i32();
  switch (code) {
    case AUTH.Ok:
      return r.done("AuthenticationOk"), { kind: "Ok" };
    case AUTH.CleartextPassword:
      return r.done("AuthenticationCleartextPassword"), { kind: "CleartextPassword" };
    case AUTH.MD5Password: {
      const salt = r.bytes(4);
      r.done("AuthenticationMD5Password");
      return { kind: "MD5Password", salt };
    }
    case AUTH.SASL: {
      const mechanisms: string[] = [];
      for (let m = r.cstr(); m !== ""; m = r.cstr()) mechanisms.push(m);
      r.done("AuthenticationSASL");
      return { kind: "SASL", mechanisms };
    }
    case AUTH.SASLContinue:
      return { kind: "SASLContinue", data: r.rest() };
    case AUTH.SASLFinal:
      return { kind: "SASLFinal", data: r.rest() };
  }
  throw new ProtocolError(`unsupported authentication request ${code}`, "28000");
}

export const encodeParameterStatus = (name: string, value: string) => w.begin(B.ParameterStatus).cstr(name).cstr(value).end().take();
export function decodeParameterStatus(body: Uint8Array): { name: string; value: string } {
  const r = createReader(body);
  const name = r.cstr();
  const value = r.cstr();
  r.done("ParameterStatus");
  return { name, value };
}

export const encodeBackendKeyData = (pid: number, key: Uint8Array) => w.begin(B.BackendKeyData).i32(pid).bytes(key).end().take();
export function decodeBackendKeyData(body: Uint8Array): { pid: number; key: Uint8Array } {
  const r = createReader(body);
  const pid = r.i32();
  return { pid, key: r.rest().slice() };
}

export type TxStatus = "I" | "T" | "E";
export const encodeReadyForQuery = (status: TxStatus) => w.begin(B.ReadyForQuery).i8(status.charCodeAt(0)).end().take();
export const READY_IDLE = encodeReadyForQuery("I");
export function decodeReadyForQuery(body: Uint8Array): TxStatus {
  const r = createReader(body);
  const s = String.fromCharCode(r.i8());
  r.done("ReadyForQuery");
  if (s !== "I" && s !== "T" && s !== "E") throw new ProtocolError(`ReadyForQuery status ${JSON.stringify(s)} is not I, T or E`);
  return s;
}

export interface Field {
  name: string;
  tableOid: number;
  column: number;
  typeOid: number;
  typeSize: number;
  typeModifier: number;
  format: number;
}
export function encodeRowDescription(fields: Field[]): Uint8Array {
  w.begin(B.RowDescription).i16(fields.length);
  for (const f of fields) w.cstr(f.name).i32(f.tableOid).i16(f.column).i32(f.typeOid).i16(f.typeSize).i32(f.typeModifier).i16(f.format);
  return w.end().take();
}
export function decodeRowDescription(body: Uint8Array): Field[] {
  const r = createReader(body);
  const fields: Field[] = [];
  for (let i = 0, n = r.u16(); i < n; i++) {
    fields.push({ name: r.cstr(), tableOid: r.i32() >>> 0, column: r.i16(), typeOid: r.i32() >>> 0, typeSize: r.i16(), typeModifier: r.i32(), format: r.i16() });
  }
  r.done("RowDescription");
  return fields;
}

export function encodeDataRow(values: Array<Uint8Array | null>): Uint8Array {
  w.begin(B.DataRow).i16(values.length);
  for (const v of values) v === null ? w.i32(-1) : w.i32(v.length).bytes(v);
  return w.end().take();
}
export function decodeDataRow(body: Uint8Array): Array<Uint8Array | null> {
  const r = createReader(body);
  const values: Array<Uint8Array | null> = [];
  for (let i = 0, n = r.u16(); i < n; i++) {
    const len = r.i32();
    values.push(len === -1 ? null : r.bytes(len));
  }
  r.done("DataRow");
  return values;
}

export const encodeCommandComplete = (tag: string) => w.begin(B.CommandComplete).cstr(tag).end().take();
export function decodeCommandComplete(body: Uint8Array): string {
  const r = createReader(body);
  const tag = r.cstr();
  r.done("CommandComplete");
  return tag;
}

/** ErrorResponse and NoticeResponse fields, keyed by their one-letter codes (S, V, C, M, D, H, P, ...). */
export type Fields = Record<string, string>;
function encodeFields(type: number, fields: Fields): Uint8Array {
  w.begin(type);
  for (const [k, v] of Object.entries(fields)) w.i8(k.charCodeAt(0)).cstr(v);
  return w.i8(0).end().take();
}
function decodeFields(body: Uint8Array): Fields {
  const r = createReader(body);
  const out: Fields = {};
  for (let t = r.i8(); t !== 0; t = r.i8()) out[String.fromCharCode(t)] = r.cstr();
  r.done("ErrorResponse");
  return out;
}
export const encodeErrorResponse = (f: Fields) => encodeFields(B.ErrorResponse, f);
export const decodeErrorResponse = decodeFields;
export const encodeNoticeResponse = (f: Fields) => encodeFields(B.NoticeResponse, f);
export const decodeNoticeResponse = decodeFields;

/** An ErrorResponse as Postgres writes it: severity twice (localised and not), code, message. */
export function errorMessage(code: string, message: string, severity = "ERROR", detail?: string): Uint8Array {
  const f: Fields = { S: severity, V: severity, C: code, M: message };
  if (detail) f.D = detail;
  return encodeErrorResponse(f);
}

/** A protocol-2 error, the only answer a protocol-2 client can read: 'E', then "FATAL:  message\n" and a NUL. */
export const errorMessageV2 = (message: string): Uint8Array => new TextEncoder().encode(`EFATAL:  ${message}\n\0`);

export function encodeNotificationResponse(pid: number, channel: string, payload: string): Uint8Array {
  return w.begin(B.NotificationResponse).i32(pid).cstr(channel).cstr(payload).end().take();
}
export function decodeNotificationResponse(body: Uint8Array): { pid: number; channel: string; payload: string } {
  const r = createReader(body);
  const out = { pid: r.i32(), channel: r.cstr(), payload: r.cstr() };
  r.done("NotificationResponse");
  return out;
}

export function encodeParameterDescription(types: number[]): Uint8Array {
  w.begin(B.ParameterDescription).i16(types.length);
  for (const t of types) w.i32(t);
  return w.end().take();
}
export function decodeParameterDescription(body: Uint8Array): number[] {
  const r = createReader(body);
  const out: number[] = [];
  for (let i = 0, n = r.u16(); i < n; i++) out.push(r.i32() >>> 0);
  r.done("ParameterDescription");
  return out;
}

export interface CopyResponse {
  format: number;
  columnFormats: number[];
}
function encodeCopyResponse(type: number, m: CopyResponse): Uint8Array {
  w.begin(type).i8(m.format).i16(m.columnFormats.length);
  for (const f of m.columnFormats) w.i16(f);
  return w.end().take();
}
export function decodeCopyResponse(body: Uint8Array): CopyResponse {
  const r = createReader(body);
  const format = r.i8();
  const columnFormats: number[] = [];
  for (let i = 0, n = r.u16(); i < n; i++) columnFormats.push(r.i16());
  r.done("CopyResponse");
  return { format, columnFormats };
}
export const encodeCopyInResponse = (m: CopyResponse) => encodeCopyResponse(B.CopyInResponse, m);
export const encodeCopyOutResponse = (m: CopyResponse) => encodeCopyResponse(B.CopyOutResponse, m);
export const encodeCopyBothResponse = (m: CopyResponse) => encodeCopyResponse(B.CopyBothResponse, m);
export const encodeBackendCopyData = (data: Uint8Array) => w.begin(B.CopyData).bytes(data).end().take();

export function encodeNegotiateProtocolVersion(newestMinor: number, unrecognised: string[]): Uint8Array {
  w.begin(B.NegotiateProtocolVersion).i32(newestMinor).i32(unrecognised.length);
  for (const o of unrecognised) w.cstr(o);
  return w.end().take();
}
export function decodeNegotiateProtocolVersion(body: Uint8Array): { newestMinor: number; unrecognised: string[] } {
  const r = createReader(body);
  const newestMinor = r.i32();
  const unrecognised: string[] = [];
  for (let i = 0, n = r.i32(); i < n; i++) unrecognised.push(r.cstr());
  r.done("NegotiateProtocolVersion");
  return { newestMinor, unrecognised };
}

// Messages without a body are built once.
export const PARSE_COMPLETE = w.begin(B.ParseComplete).end().take();
export const BIND_COMPLETE = w.begin(B.BindComplete).end().take();
export const CLOSE_COMPLETE = w.begin(B.CloseComplete).end().take();
export const NO_DATA = w.begin(B.NoData).end().take();
export const EMPTY_QUERY_RESPONSE = w.begin(B.EmptyQueryResponse).end().take();
export const PORTAL_SUSPENDED = w.begin(B.PortalSuspended).end().take();
export const BACKEND_COPY_DONE = w.begin(B.CopyDone).end().take();
export const AUTH_OK = encodeAuthentication({ kind: "Ok" });
