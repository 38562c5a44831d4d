// Writes that bypass the pooler, heard through LISTEN/NOTIFY on the origin: one listening connection per origin
// database whose results are cached. A statement-level trigger on a table sends its name at commit (the SQL is
// in README.md, "Writes that bypass the pooler"), and every cached result that read that table is dropped. A
// listening connection that was lost may have missed notifications, so each reconnection drops everything the
// cache holds for that database before it trusts the channel again.
import postgres from "postgres";

export interface OriginListener {
  stop(): Promise<void>;
}

/** The tables a notification names: comma-separated, schema-qualified or not; empty or "*" means all. */
export function notifiedTables(payload: string): string[] {
  const names = payload
    .split(",")
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean)
    .map((t) => t.slice(t.lastIndexOf(".") + 1).replace(/^"|"$/g, ""));
  return names.length === 0 || names.includes("*") ? ["*"] : names;
}

export function listenForWrites(o: {
  originUrl: string;
  database: string;
  channel: string;
  /** Drops what read these tables ("*": everything) in this database. */
  invalidate(tables: string[]): void;
  log(line: string): void;
}): OriginListener {
  const url = new URL(o.originUrl);
  url.pathname = "/" + encodeURIComponent(o.database);
  const sql = postgres(url.toString(), { max: 1, idle_timeout: 0, connect_timeout: 10, fetch_types: false, onnotice: () => {}, connection: { application_name: "kvdrive cache invalidation" } });
  let stopped = false;
  let listened = false;
  const start = () =>
    sql
      .listen(
        o.channel,
        (payload) => o.invalidate(notifiedTables(payload)),
        () => {
          // After a reconnection what was missed meanwhile is unknown: drop it all. The first LISTEN comes
          // moments after the first origin connection, a window no wider than any cache's without it.
          if (listened) o.invalidate(["*"]);
          listened = true;
        },
      )
      .catch((e: Error) => {
        if (stopped) return;
        o.log(`kvdrive pooler: LISTEN ${o.channel} on ${o.database} failed (${e.message}); retrying in 5 s`);
        setTimeout(() => void (stopped || start()), 5000).unref?.();
      });
  void start();
  return {
    async stop() {
      stopped = true;
      await sql.end({ timeout: 1 }).catch(() => {});
    },
  };
}
