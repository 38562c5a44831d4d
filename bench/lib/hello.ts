// The ceiling: a Bun.serve hello-world, run as its own process and measured with the same load generator
// at the same connections, because the generator shares the machine's cores with the server under test.
import { freePort } from "../../src/embedded/postgres.ts";
import { spawnUntil, type Child } from "./procs.ts";

if (import.meta.main) {
  const server = Bun.serve({ port: Number(process.env.PORT ?? 0), hostname: "127.0.0.1", fetch: () => new Response("hello") });
  console.log(`listening ${server.port}`);
  process.on("SIGTERM", () => {
    server.stop(true);
    process.exit(0);
  });
}

export async function startHello(): Promise<{ child: Child; url: string }> {
  const port = await freePort();
  const child = await spawnUntil(["bun", "bench/lib/hello.ts"], { PORT: String(port) }, "listening");
  return { child, url: `http://127.0.0.1:${port}` };
}
