// The ceiling: a Bun.serve hello-world on the same machine, measured with the same load generator.
const server = Bun.serve({ port: Number(process.env.PORT ?? 0), hostname: "127.0.0.1", fetch: () => new Response("hello") });
console.log(`listening ${server.port}`);
process.on("SIGTERM", () => {
  server.stop(true);
  process.exit(0);
});
