// Writes to a Bun socket that may accept only part of a write: the rest waits here until `drain`.
// Small writes are packed into shared 16 KiB blocks, so a client that sends many small requests without
// reading (a Sync flood) costs its answer bytes, not an array per message; the owner stops reading from a
// client whose queue passes KVDRIVE_PG_MAX_CLIENT_OUTPUT_BYTES and pauses origins while anything is queued.
import type { Socket } from "bun";

export interface Outbox {
  write(bytes: Uint8Array): void;
  /** Call from the socket's drain handler; returns true when everything queued has been written. */
  drain(): boolean;
  queued(): number;
}

const BLOCK = 16 * 1024;

export function createOutbox(socket: Socket<any>): Outbox {
  const queue: Uint8Array[] = [];
  /** The last block is open for appends up to `tailFill` bytes used. */
  let tailOpen = false;
  let tailFill = 0;
  let bytes = 0;

  // Views into a caller's chunk are only valid during its call: what is kept is always a copy.
  function append(b: Uint8Array) {
    bytes += b.length;
    if (tailOpen) {
      const t = queue[queue.length - 1]!;
      if (t.length - tailFill >= b.length) {
        t.set(b, tailFill);
        tailFill += b.length;
        return;
      }
      queue[queue.length - 1] = t.subarray(0, tailFill);
      tailOpen = false;
    }
    if (b.length >= BLOCK) {
      queue.push(b.slice());
      return;
    }
    const t = new Uint8Array(BLOCK);
    t.set(b);
    queue.push(t);
    tailOpen = true;
    tailFill = b.length;
  }

  return {
    write(b) {
      if (b.length === 0) return;
      if (bytes === 0) {
        const n = socket.write(b);
        if (n === b.length || n < 0) return; // n < 0: closed; the close handler cleans up
        b = b.subarray(n);
      }
      append(b);
    },
    drain() {
      while (queue.length) {
        const open = tailOpen && queue.length === 1;
        const head = queue[0]!;
        const b = open ? head.subarray(0, tailFill) : head;
        const n = socket.write(b);
        if (n < 0) return false;
        bytes -= Math.max(0, n);
        if (n < b.length) {
          queue[0] = head.subarray(n);
          if (open) tailFill -= n;
          return false;
        }
        queue.shift();
        if (open) tailOpen = false;
      }
      return true;
    },
    queued: () => bytes,
  };
}
