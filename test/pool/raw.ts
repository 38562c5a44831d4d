// A raw TCP client for protocol tests: sends bytes, reads backend messages, notices when the server closes.
import type { Socket } from "bun";
import { createFrames } from "../../src/protocol/frames.ts";
import { decodeErrorResponse } from "../../src/protocol/backend.ts";
import { encodeCancelRequest } from "../../src/protocol/frontend.ts";

export interface RawMessage {
  type: string;
  body: Uint8Array;
}

export interface RawConn {
  write(b: Uint8Array): void;
  /** Reads messages until `until` matches one (returned last) or the server closes. */
  read(until: (m: RawMessage) => boolean, timeoutMs?: number): Promise<RawMessage[]>;
  /** The single-byte answer to SSLRequest/GSSENCRequest. */
  readByte(): Promise<string>;
  closed(): Promise<void>;
  isClosed(): boolean;
  end(): void;
}

export async function rawConnect(port: number): Promise<RawConn> {
  let buf: Uint8Array = new Uint8Array(0);
  let closed = false;
  let wake = () => {};
  const socket: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        buf = Buffer.concat([buf, d]);
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
  const waitData = () => new Promise<void>((r) => (wake = r));
  return {
    write: (b) => void socket.write(b),
    async readByte() {
      while (buf.length < 1 && !closed) await waitData();
      const c = String.fromCharCode(buf[0]!);
      buf = buf.subarray(1);
      return c;
    },
    async read(until, timeoutMs = 10_000) {
      const out: RawMessage[] = [];
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let done = false;
        const frames = createFrames(1 << 30);
        let consumed = 0;
        frames.push(buf, (type, body, _b, at) => {
          if (done) return false;
          const m = { type: String.fromCharCode(type), body: body.slice() };
          out.push(m);
          consumed = at + 5 + body.length;
          if (until(m)) done = true;
          return true;
        });
        buf = buf.subarray(consumed);
        if (done || closed) return out;
        if (Date.now() > deadline) throw new Error(`timed out; got ${out.map((m) => m.type).join("")}`);
        await Promise.race([waitData(), Bun.sleep(50)]);
      }
    },
    async closed() {
      while (!closed) await waitData();
    },
    isClosed: () => closed,
    end: () => socket.end(),
  };
}

export const errorOf = (m: RawMessage) => decodeErrorResponse(m.body);

/**
 * Sends a CancelRequest for a backend key (as clients such as node-postgres hold it: pid and a 32-bit secret)
 * on a connection of its own; resolves once the server has closed that connection.
 */
export async function sendCancelRequest(port: number, pid: number, secret: number): Promise<void> {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setInt32(0, secret);
  let closed = () => {};
  const done = new Promise<void>((resolve) => (closed = resolve));
  const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, close: () => closed(), error: () => closed() } });
  socket.write(encodeCancelRequest(pid, key));
  await done;
}
