// A TCP relay with configurable one-way delay and jitter in each direction: simulated distance where netem
// is not available. Byte order is preserved; each chunk is stamped with its due time and one timer per
// direction fires for the head of the queue, so a busy link never turns into a storm of timers.
import type { Socket, TCPSocketListener } from "bun";

export interface RelayOptions {
  targetHost: string;
  targetPort: number;
  /** One-way delay added in each direction, in milliseconds. */
  delayMs?: number;
  /** Uniform jitter of ± jitterMs around delayMs (never negative, never reordering). */
  jitterMs?: number;
  /**
   * Charge each new connection one round trip before its first bytes go upstream, as a TCP handshake over
   * that distance would (the relay's own handshake with the client is local and instant).
   */
  simulateHandshake?: boolean;
  host?: string;
  port?: number;
}

export interface RelayStats {
  connections: number;
  open: number;
  bytesUp: number;
  bytesDown: number;
}

export interface Relay {
  port: number;
  setDelay(delayMs: number, jitterMs?: number): void;
  stats(): RelayStats;
  stop(): Promise<void>;
}

interface Pipe {
  push(data: Uint8Array): void;
  attach(out: Socket<unknown>): void;
  drain(): void;
  end(): void;
  destroy(): void;
}

function createPipe(delay: () => number, count: (n: number) => void): Pipe {
  const queue: { due: number; data: Uint8Array }[] = [];
  let head = 0;
  let lastDue = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const backlog: Uint8Array[] = [];
  let out: Socket<unknown> | undefined;
  let ending = false;
  let dead = false;

  const finishIfDone = () => {
    if (ending && out && head === queue.length && backlog.length === 0) out.end();
  };
  const send = (data: Uint8Array) => {
    count(data.byteLength);
    if (!out || backlog.length) return void backlog.push(data);
    const n = out.write(data);
    if (n < data.byteLength) backlog.push(data.subarray(Math.max(0, n)));
  };
  const fire = () => {
    timer = undefined;
    const now = performance.now();
    // Anything due within half a millisecond goes now: timers fire late more often than early.
    while (head < queue.length && queue[head]!.due <= now + 0.5) send(queue[head++]!.data);
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    }
    schedule();
    finishIfDone();
  };
  const schedule = () => {
    if (timer || dead || head === queue.length) return;
    timer = setTimeout(fire, Math.max(0, queue[head]!.due - performance.now()));
  };
  return {
    push(data) {
      if (dead) return;
      const d = delay();
      if (d <= 0 && head === queue.length) return send(data);
      // Copy: the chunk outlives this callback. max() keeps order when jitter would reorder.
      const due = Math.max(performance.now() + d, lastDue);
      lastDue = due;
      queue.push({ due, data: data.slice() });
      schedule();
    },
    attach(socket) {
      out = socket;
      this.drain();
    },
    drain() {
      while (out && backlog.length) {
        const chunk = backlog[0]!;
        const n = out.write(chunk);
        if (n < chunk.byteLength) {
          backlog[0] = chunk.subarray(Math.max(0, n));
          return;
        }
        backlog.shift();
      }
      finishIfDone();
    },
    end() {
      ending = true;
      finishIfDone();
    },
    destroy() {
      dead = true;
      if (timer) clearTimeout(timer);
      queue.length = 0;
      backlog.length = 0;
    },
  };
}

interface Conn {
  up: Pipe;
  down: Pipe;
  upstream?: Socket<unknown>;
  client: Socket<Conn>;
  closed: boolean;
}

export async function startRelay(opts: RelayOptions): Promise<Relay> {
  let delayMs = opts.delayMs ?? 0;
  let jitterMs = opts.jitterMs ?? 0;
  if (!(delayMs >= 0) || !(jitterMs >= 0)) throw new Error(`relay: delayMs (${delayMs}) and jitterMs (${jitterMs}) must be >= 0`);
  const oneWay = () => (jitterMs > 0 ? Math.max(0, delayMs + (Math.random() * 2 - 1) * jitterMs) : delayMs);
  const stats: RelayStats = { connections: 0, open: 0, bytesUp: 0, bytesDown: 0 };
  const conns = new Set<Conn>();

  const close = (c: Conn) => {
    if (c.closed) return;
    c.closed = true;
    conns.delete(c);
    stats.open--;
    c.up.destroy();
    c.down.destroy();
    c.client.end();
    c.upstream?.end();
  };

  const listener: TCPSocketListener<Conn> = Bun.listen<Conn>({
    hostname: opts.host ?? "127.0.0.1",
    port: opts.port ?? 0,
    socket: {
      open(client) {
        let handshake = opts.simulateHandshake ?? false;
        const upDelay = () => {
          if (!handshake) return oneWay();
          handshake = false;
          return oneWay() + 2 * delayMs;
        };
        const c: Conn = {
          client,
          closed: false,
          up: createPipe(upDelay, (n) => (stats.bytesUp += n)),
          down: createPipe(oneWay, (n) => (stats.bytesDown += n)),
        };
        client.data = c;
        conns.add(c);
        stats.connections++;
        stats.open++;
        c.down.attach(client as Socket<unknown>);
        Bun.connect<undefined>({
          hostname: opts.targetHost,
          port: opts.targetPort,
          socket: {
            open(upstream) {
              if (c.closed) return void upstream.end();
              c.upstream = upstream as Socket<unknown>;
              c.up.attach(upstream as Socket<unknown>);
            },
            data: (_s, data) => c.down.push(data),
            drain: () => c.up.drain(),
            end: () => c.down.end(),
            close: () => c.down.end(),
            error: () => close(c),
            connectError: () => close(c),
          },
        }).catch(() => close(c));
      },
      data: (client, data) => client.data.up.push(data),
      drain: (client) => client.data.down.drain(),
      end: (client) => client.data.up.end(),
      close: (client) => {
        const c = client.data;
        // The client is gone: flush what it sent, but nothing downstream can be delivered any more.
        c.up.end();
        c.down.destroy();
        if (!c.closed) {
          c.closed = true;
          conns.delete(c);
          stats.open--;
        }
      },
      error: (client) => close(client.data),
    },
  });

  return {
    port: listener.port,
    setDelay(ms, jitter = 0) {
      if (!(ms >= 0) || !(jitter >= 0)) throw new Error(`relay: delayMs (${ms}) and jitterMs (${jitter}) must be >= 0`);
      delayMs = ms;
      jitterMs = jitter;
    },
    stats: () => ({ ...stats }),
    async stop() {
      listener.stop(true);
      for (const c of [...conns]) close(c);
    },
  };
}
