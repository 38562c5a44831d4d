// The Postgres wire-protocol listener: accepts TCP clients (Bun.listen) and hands each to a client state
// machine; an SSLRequest can switch an accepted socket to TLS when a certificate is configured.
import type { Socket, TCPSocketListener } from "bun";
import fs from "node:fs";
import { errorMessage } from "../protocol/backend.ts";
import { createClient, type ClientSocketData } from "./client.ts";
import type { PoolerContext } from "./context.ts";

export interface Listener {
  port: number;
  /** Clients connected now. */
  clients(): number;
  stop(): void;
}

export function listen(ctx: PoolerContext, host: string, port: number): Listener {
  const cfg = ctx.config;
  let count = 0;
  const tlsOptions = cfg.pgTlsCert && cfg.pgTlsKey ? { cert: fs.readFileSync(cfg.pgTlsCert, "utf8"), key: fs.readFileSync(cfg.pgTlsKey, "utf8") } : null;
  const sockets = new Set<Socket<ClientSocketData>>();

  const handlers = {
    open(socket: Socket<ClientSocketData>) {
      if (count >= cfg.pgMaxClients) {
        socket.write(errorMessage("53300", `too many clients: KVDRIVE_PG_MAX_CLIENTS is ${cfg.pgMaxClients}`, "FATAL"));
        socket.end();
        return;
      }
      count++;
      sockets.add(socket);
      socket.setNoDelay(true);
      socket.data = { client: createClient(socket, ctx) };
    },
    data(socket: Socket<ClientSocketData>, chunk: Uint8Array) {
      socket.data?.client?.onData(chunk);
    },
    drain(socket: Socket<ClientSocketData>) {
      socket.data?.client?.onDrain();
    },
    close(socket: Socket<ClientSocketData>) {
      if (sockets.delete(socket)) count--;
      socket.data?.client?.onClose();
    },
    error(socket: Socket<ClientSocketData>) {
      socket.data?.client?.onClose();
    },
  };

  ctx.upgradeTls = (socket: Socket<any>) => {
    if (!tlsOptions) return false;
    socket.write(new Uint8Array([0x53])); // 'S'
    const data: ClientSocketData = { client: null };
    const [, tls] = socket.upgradeTLS<ClientSocketData>({ data, tls: tlsOptions, socket: { ...handlers, open() {} } });
    data.client = createClient(tls, ctx, true);
    // The plain socket's client is done; the TLS socket continues the start-up.
    (socket.data as ClientSocketData).client = null;
    if (sockets.delete(socket)) sockets.add(tls);
    return true;
  };
  ctx.tls = tlsOptions !== null;

  const server: TCPSocketListener<ClientSocketData> = Bun.listen<ClientSocketData>({ hostname: host, port, socket: handlers });
  return {
    port: server.port,
    clients: () => count,
    stop() {
      const bye = errorMessage("57P01", "terminating connection: the pooler is shutting down", "FATAL");
      for (const s of sockets) {
        s.write(bye);
        s.end();
      }
      server.stop(true);
    },
  };
}
