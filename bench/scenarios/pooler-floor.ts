// The floor for any pooler written on Bun: a byte relay with one origin connection per client and no parsing
// at all (session mode, no authentication of its own). The pooler scenario runs it as its own process, next to
// PgBouncer, so the cost of Bun's sockets alone is measured in the same run.
// `bun bench/scenarios/pooler-floor.ts <listen port> <origin port>` prints "ready" once listening.
interface Side {
  peer: { write(b: Uint8Array): number; end(): void } | null;
  pending: Uint8Array[];
}

if (import.meta.main) {
  const [listenPort, originPort] = [Number(process.argv[2]), Number(process.argv[3])];
  Bun.listen<Side>({
    hostname: "127.0.0.1",
    port: listenPort,
    socket: {
      open(client) {
        client.data = { peer: null, pending: [] };
        client.setNoDelay(true);
        void Bun.connect<Side>({
          hostname: "127.0.0.1",
          port: originPort,
          data: { peer: client, pending: [] },
          socket: {
            open(origin) {
              origin.setNoDelay(true);
              client.data.peer = origin;
              for (const b of client.data.pending) origin.write(b);
              client.data.pending = [];
            },
            // Writes small enough for the socket buffer (pgbench -S) complete at once; a floor needs no queue.
            data: (origin, b) => void origin.data.peer!.write(b),
            close: (origin) => origin.data.peer!.end(),
            error() {},
          },
        }).catch(() => client.end());
      },
      data(client, b) {
        if (client.data.peer) client.data.peer.write(b);
        else client.data.pending.push(b.slice());
      },
      close: (client) => client.data.peer?.end(),
      error() {},
    },
  });
  console.log("ready");
}
