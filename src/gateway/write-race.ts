// The write race of a replicated backend: a write goes to both sides and is acknowledged by the primary
// (shadow) or by the first side to succeed (active-active). A side that fails, or that has fallen too far
// behind, gets the rows through the durable repair queue instead.
import { BackendBehindError } from "../errors.ts";
import { compareVersions, type StoredEntry } from "../storage/entry.ts";
import { other, SUSPECT_GRACE_MS, type Flight, type Sides } from "./replica-sides.ts";
import type { ReplicationMode, Side } from "./replicated.ts";

export interface WriteRace {
  write(rows: StoredEntry[]): Promise<boolean[]>;
  /** Queues every row still in flight to a side for that side, and syncs the queue; returns the rows. */
  park(): number;
}

export function createWriteRace(s: Sides): WriteRace {
  const { opts, call, enqueue, ck, floors, recent, rowsInFlight, flying } = s;
  const maxInFlightRows = opts.maxInFlightRows ?? 20_000;

  /**
   * Races one write to both sides. Resolves with the first success; a side that fails (now or later) gets
   * every row queued for repair. Rejects only when both fail.
   */
  function raceWrite(rows: StoredEntry[], ackOn: "first" | Side): Promise<boolean[]> {
    const ids = rows.map((r) => ck(r.ns, r.key));
    for (const id of ids) s.hold(id);
    // A row older than a write this instance already acknowledged for its key is not applied, whatever the
    // first side to answer says: that side may not have stored the newer write yet (it is still on its way
    // there, on another connection), and once it has, the newer one wins on it too.
    const superseded = rows.map((r, i) => {
      const f = floors.get(ids[i]!);
      return f !== undefined && compareVersions(f.version, r.version) >= 0;
    });
    const flags = (v: boolean[]) => (superseded.includes(true) ? v.map((x, i) => x && !superseded[i]) : v);
    // Once acknowledged, a write is this instance's floor for its key: no later read may answer older.
    const acked = () =>
      rows.forEach((r, i) => {
        const f = floors.get(ids[i]!);
        if (!f || compareVersions(r.version, f.version) > 0) floors.set(ids[i]!, { version: r.version, tombstone: r.tombstone });
      });
    const attempt = (side: Side): Promise<boolean[]> => {
      // A side that has fallen this far behind gets the rows through the repair queue instead: its backlog
      // stays bounded (and durable) rather than growing in memory at the fast side's pace.
      const behind = (x: Side) => rowsInFlight[x] + rows.length > maxInFlightRows;
      if (side !== ackOn && behind(side) && (ackOn !== "first" || !behind(other(side)))) {
        s.shed.inc({ backend: side }, rows.length);
        for (const r of rows) enqueue(side, r.ns, r.key, "write");
        return Promise.reject(new BackendBehindError(`${side} backend is ${rowsInFlight[side]} rows behind: queued for repair`));
      }
      rowsInFlight[side] += rows.length;
      const flight: Flight = { side, rows };
      flying.add(flight);
      return (flight.done = call(side, "write", (b) => b.write(rows))
        .catch((e) => {
          for (const r of rows) enqueue(side, r.ns, r.key, "write");
          throw e;
        })
        .finally(() => {
          rowsInFlight[side] -= rows.length;
          flying.delete(flight);
        }));
    };
    const p = attempt("primary");
    const r = attempt("replica");
    Promise.allSettled([p, r]).then(() => {
      // Keys stay suspect a little longer: an object store without compare-and-swap can still be overwritten
      // by a concurrent older write for about one round trip after ours was verified (s3-conditional.ts).
      const until = performance.now() + SUSPECT_GRACE_MS;
      for (const id of ids) {
        s.release(id);
        recent.set(id, until);
      }
      s.trimRecent();
    });
    if (ackOn !== "first") {
      const mine = ackOn === "primary" ? p : r;
      return mine.then((v) => {
        acked();
        return flags(v);
      });
    }
    return s.firstSuccess([p.then((v) => ({ v, side: "primary" as Side })), r.then((v) => ({ v, side: "replica" as Side }))], "write").then((x) => {
      acked();
      return flags(x.v);
    });
  }

  async function writeGroup(mode: ReplicationMode, rows: StoredEntry[]): Promise<boolean[]> {
    if (mode === "primary") return call("primary", "write", (b) => b.write(rows));
    const parts = opts.partition ? opts.partition(rows) : [rows];
    if (parts.length === 1) return raceWrite(rows, mode === "shadow" ? "primary" : "first");
    const applied = new Map<StoredEntry, boolean>();
    await Promise.all(
      parts.map(async (part) => {
        const flags = await raceWrite(part, mode === "shadow" ? "primary" : "first");
        part.forEach((r, i) => applied.set(r, flags[i]!));
      }),
    );
    return rows.map((r) => applied.get(r) ?? false);
  }

  return {
    async write(rows) {
      if (rows.length === 0) return [];
      // A batch can mix namespaces, and namespaces can have different modes.
      const groups = new Map<ReplicationMode, number[]>();
      rows.forEach((r, i) => {
        const mode = opts.modeOf(r.ns);
        (groups.get(mode) ?? groups.set(mode, []).get(mode)!).push(i);
      });
      if (groups.size === 1) return writeGroup(groups.keys().next().value!, rows);
      const out: boolean[] = new Array(rows.length).fill(false);
      await Promise.all(
        [...groups].map(async ([mode, idx]) => {
          const flags = await writeGroup(mode, idx.map((i) => rows[i]!));
          idx.forEach((i, j) => (out[i] = flags[j]!));
        }),
      );
      return out;
    },
    park() {
      let n = 0;
      for (const { side, rows } of flying) {
        for (const r of rows) enqueue(side, r.ns, r.key, "write");
        n += rows.length;
      }
      flying.clear();
      try {
        opts.queue.sync();
      } catch (e) {
        opts.log?.(`repair queue could not be synced: ${(e as Error).message}`);
      }
      return n;
    },
  };
}
