// The Postgres wire-protocol listener: accepts TCP clients (Bun.listen) and hands each to a client state
// machine; an SSLRequest can switch an accepted socket to TLS when a certificate is configured.
import type { Socket, TCPSocketListener } from "bun";
import fs from "node:fs";
import { errorMessage } from "../../protocol/backend.ts";
import { createClient, type ClientSocketData } from "./client.ts";
import type { PoolerContext } from "../context.ts";

export interface Listener {
  port: number;
  /** Clients connected now. */
  clients(): number;
  /** Of those, clients that have not logged in yet. */
  starting(): number;
  stop(): void;
}

export function listen(ctx: PoolerContext, host: string, port: number): Listener {
  const cfg = ctx.config;
  let count = 0;
  /**
   * Connections that have not logged in yet (start-up, authentication, a failed login's delay). Each holds
   * little (KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES), and this bounds how many: past it a new one is turned away.
   * A connection's slot is freed once, whichever comes first: login or close (a TLS upgrade keeps the slot).
   */
  let starting = 0;
  const startSlot = () => {
    starting++;
    let held = true;
    return () => {
      if (held) starting--;
      held = false;
    };
  };
  const slots = new WeakMap<Socket<ClientSocketData>, () => void>();
  const tlsOptions = cfg.pgTlsCert && cfg.pgTlsKey ? { cert: fs.readFileSync(cfg.pgTlsCert, "utf8"), key: fs.readFileSync(cfg.pgTlsKey, "utf8") } : null;
  const sockets = new Set<Socket<ClientSocketData>>();

  const handlers = {
    open(socket: Socket<ClientSocketData>) {
      if (count >= cfg.pgMaxClients) {
        socket.write(errorMessage("53300", `too many clients: KVDRIVE_PG_MAX_CLIENTS is ${cfg.pgMaxClients}`, "FATAL"));
        socket.end();
        return;
      }
      if (starting >= cfg.pgMaxStartingClients) {
        socket.write(errorMessage("53300", `too many clients in start-up: KVDRIVE_PG_MAX_STARTING_CLIENTS is ${cfg.pgMaxStartingClients}`, "FATAL"));
        socket.end();
        return;
      }
      count++;
      sockets.add(socket);
      socket.setNoDelay(true);
      const free = startSlot();
      slots.set(socket, free);
      socket.data = { client: createClient(socket, ctx, false, free) };
    },
    data(socket: Socket<ClientSocketData>, chunk: Uint8Array) {
      socket.data?.client?.onData(chunk);
    },
    drain(socket: Socket<ClientSocketData>) {
      socket.data?.client?.onDrain();
    },
    close(socket: Socket<ClientSocketData>) {
      slots.get(socket)?.();
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
    const free = slots.get(socket);
    if (free) {
      slots.delete(socket);
      slots.set(tls, free);
    }
    data.client = createClient(tls, ctx, true, free);
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
    starting: () => starting,
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
