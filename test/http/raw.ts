// Raw HTTP/1.1 over a TCP socket, for request targets and Host headers that fetch() would normalize or refuse.
import net from "node:net";

export interface RawResponse {
  status: number;
  headers: string;
  body: string;
}

/** Sends the bytes as they are and reads until the server closes (send `Connection: close`) or `timeoutMs`. */
export function rawRequest(port: number, bytes: string | Uint8Array, timeoutMs = 10_000): Promise<RawResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(port, "127.0.0.1", () => sock.write(bytes));
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    const done = () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const sep = text.indexOf("\r\n\r\n");
      const head = sep < 0 ? text : text.slice(0, sep);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      let body = sep < 0 ? "" : text.slice(sep + 4);
      if (/\r\ntransfer-encoding: *chunked/i.test(head)) body = unchunk(body);
      resolve({ status, headers: head, body });
    };
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("close", done);
    sock.on("error", () => {});
  });
}

function unchunk(s: string): string {
  let out = "";
  let i = 0;
  for (;;) {
    const eol = s.indexOf("\r\n", i);
    if (eol < 0) return out;
    const n = parseInt(s.slice(i, eol), 16);
    if (!(n > 0)) return out;
    out += s.slice(eol + 2, eol + 2 + n);
    i = eol + 2 + n + 2;
  }
}

/** A request with Content-Length set from the body and Connection: close. */
export function request(method: string, target: string, headers: Record<string, string>, body = ""): string {
  const lines = [`${method} ${target} HTTP/1.1`];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body !== "" || method === "POST" || method === "PUT") lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  lines.push("Connection: close", "", body);
  return lines.join("\r\n");
}
