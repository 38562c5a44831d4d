// Byte-level building blocks of the codec: a growable writer whose message length is filled in at the end,
// and a bounds-checked reader. Both are pure; nothing here touches sockets.
import { ProtocolError, type ErrorReply } from "../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface Writer {
  /** Starts a message: the type byte (none for startup-phase packets) and a length placeholder. */
  begin(type?: number): Writer;
  i8(v: number): Writer;
  i16(v: number): Writer;
  i32(v: number): Writer;
  /** A NUL-terminated UTF-8 string. */
  cstr(s: string): Writer;
  bytes(b: Uint8Array): Writer;
  /** Fills the length of the message begun last. */
  end(): Writer;
  /** A copy of everything written since the last reset. */
  take(): Uint8Array;
}

export function createWriter(initial = 512): Writer {
  let buf = new Uint8Array(initial);
  let view = new DataView(buf.buffer);
  let pos = 0;
  let lengthAt = -1;
  const ensure = (n: number) => {
    if (pos + n <= buf.length) return;
    let size = buf.length * 2;
    while (size < pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(buf.subarray(0, pos));
    buf = next;
    view = new DataView(buf.buffer);
  };
  const w: Writer = {
    begin(type) {
      if (type !== undefined) w.i8(type);
      lengthAt = pos;
      return w.i32(0);
    },
    i8(v) {
      ensure(1);
      buf[pos++] = v;
      return w;
    },
    i16(v) {
      ensure(2);
      view.setInt16(pos, v);
      pos += 2;
      return w;
    },
    i32(v) {
      ensure(4);
      view.setInt32(pos, v);
      pos += 4;
      return w;
    },
    cstr(s) {
      // UTF-8 is at most 3 bytes per UTF-16 unit.
      ensure(s.length * 3 + 1);
      pos += encoder.encodeInto(s, buf.subarray(pos)).written;
      buf[pos++] = 0;
      return w;
    },
    bytes(b) {
      ensure(b.length);
      buf.set(b, pos);
      pos += b.length;
      return w;
    },
    end() {
      view.setInt32(lengthAt, pos - lengthAt);
      return w;
    },
    take() {
      const out = buf.slice(0, pos);
      pos = 0;
      lengthAt = -1;
      return out;
    },
  };
  return w;
}

export interface Reader {
  readonly pos: number;
  remaining(): number;
  i8(): number;
  i16(): number;
  /** An unsigned 16-bit count: Postgres reads parameter and format counts as uint16 (up to 65,535). */
  u16(): number;
  i32(): number;
  cstr(): string;
  bytes(n: number): Uint8Array;
  rest(): Uint8Array;
  /** Throws unless the whole body was consumed: trailing garbage is a protocol violation. */
  done(what: string): void;
}

export function createReader(body: Uint8Array): Reader {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let pos = 0;
  const need = (n: number) => {
    if (n < 0 || pos + n > body.length) throw new ProtocolError(`message truncated: needed ${n} bytes at offset ${pos} of ${body.length}`);
  };
  return {
    get pos() {
      return pos;
    },
    remaining: () => body.length - pos,
    i8() {
      need(1);
      return body[pos++]!;
    },
    i16() {
      need(2);
      const v = view.getInt16(pos);
      pos += 2;
      return v;
    },
    u16() {
      need(2);
      const v = view.getUint16(pos);
      pos += 2;
      return v;
    },
    i32() {
      need(4);
      const v = view.getInt32(pos);
      pos += 4;
      return v;
    },
    cstr() {
      const end = body.indexOf(0, pos);
      if (end < 0) throw new ProtocolError(`string at offset ${pos} is not NUL-terminated`);
      const s = decoder.decode(body.subarray(pos, end));
      pos = end + 1;
      return s;
    },
    bytes(n) {
      need(n);
      const b = body.subarray(pos, pos + n);
      pos += n;
      return b;
    },
    rest() {
      const b = body.subarray(pos);
      pos = body.length;
      return b;
    },
    done(what) {
      if (pos !== body.length) throw new ProtocolError(`${what} has ${body.length - pos} unexpected trailing bytes`);
    },
  };
}

export const utf8 = (s: string) => encoder.encode(s);
