// Writes to a Bun socket that may accept only part of a write: the rest waits here until `drain`.
// The owner pauses its producer while anything is queued, so the queue holds at most about one chunk.
import type { Socket } from "bun";

export interface Outbox {
  write(bytes: Uint8Array): void;
  /** Call from the socket's drain handler; returns true when everything queued has been written. */
  drain(): boolean;
  queued(): number;
}

export function createOutbox(socket: Socket<any>): Outbox {
  const queue: Uint8Array[] = [];
  let bytes = 0;
  return {
    write(b) {
      if (b.length === 0) return;
      if (queue.length === 0) {
        const n = socket.write(b);
        if (n === b.length || n < 0) return; // n < 0: closed; the close handler cleans up
        b = b.subarray(n);
      }
      // Views into a caller's chunk are only valid during its call: keep a copy.
      queue.push(b.slice());
      bytes += b.length;
    },
    drain() {
      while (queue.length) {
        const b = queue[0]!;
        const n = socket.write(b);
        if (n < 0) return false;
        bytes -= Math.max(0, n);
        if (n < b.length) {
          queue[0] = b.subarray(n);
          return false;
        }
        queue.shift();
      }
      return true;
    },
    queued: () => bytes,
  };
}
