// The workerd config (capnp text) for one Worker module whose KV and Hyperdrive bindings are served by kvdrive.
// Pure: everything it needs (addresses, token, credentials, resolved namespace ids) comes in as arguments.
// A KV binding is an `external` HTTP service whose injected headers carry the token and the namespace id (the
// runtime sends neither); a Hyperdrive binding designates an `external` TCP service on the pooler's port.

export interface KvBinding {
  name: string;
  namespaceId: string;
}

export interface HyperdriveBinding {
  name: string;
  database: string;
}

export interface WorkerdConfigInput {
  /** Path of the (bundled) ES module, as the config file should `embed` it (relative to the config's directory). */
  modulePath: string;
  /** Address the Worker's HTTP socket listens on, e.g. "127.0.0.1:8790" or "*:8790". */
  listen: string;
  compatibilityDate: string;
  kv: KvBinding[];
  hyperdrive: HyperdriveBinding[];
  /** HOST:PORT of kvdrive's KV-binding listener. */
  kvAddress: string;
  /** HOST:PORT of kvdrive's Postgres pooler. */
  pgAddress: string;
  apiToken: string;
  pgUser: string;
  pgPassword: string;
}

// From this compatibility date on, workerd turns nodejs_compat on by itself (and warns when it is also given).
const NODEJS_COMPAT_DEFAULT_FROM = "2026-08-04";
const BINDING_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** A capnp text literal (JSON's escapes are capnp's). */
const lit = (s: string) => JSON.stringify(s);

export function validateBindingName(name: string): string {
  if (!BINDING_NAME.test(name)) throw new Error(`binding name ${lit(name)} is not a JavaScript identifier`);
  return name;
}

export function workerdConfig(o: WorkerdConfigInput): string {
  const names = [...o.kv.map((b) => b.name), ...o.hyperdrive.map((b) => b.name)];
  for (const n of names) validateBindingName(n);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new Error(`binding ${lit(dup)} is given twice`);
  const moduleName = o.modulePath.split("/").pop()!;

  const services = [`    (name = "main", worker = .worker),`];
  for (const b of o.kv) {
    services.push(
      `    (name = ${lit(`kv-${b.name}`)}, external = (address = ${lit(o.kvAddress)}, http = (style = host, injectRequestHeaders = [`,
      `      (name = "Authorization", value = ${lit(`Bearer ${o.apiToken}`)}),`,
      `      (name = "X-Kvdrive-Namespace", value = ${lit(b.namespaceId)}),`,
      `    ]))),`,
    );
  }
  if (o.hyperdrive.length) services.push(`    (name = "kvdrive-postgres", external = (address = ${lit(o.pgAddress)}, tcp = ())),`);

  const bindings = [
    ...o.kv.map((b) => `    (name = ${lit(b.name)}, kvNamespace = ${lit(`kv-${b.name}`)}),`),
    ...o.hyperdrive.map(
      (b) =>
        `    (name = ${lit(b.name)}, hyperdrive = (designator = "kvdrive-postgres", database = ${lit(b.database)}, user = ${lit(o.pgUser)}, password = ${lit(o.pgPassword)}, scheme = "postgresql")),`,
    ),
  ];

  return `# workerd config written by \`bun run kvdrive workerd-config\`: KV and Hyperdrive bindings served by kvdrive.
# It holds kvdrive's API token and the pooler's password: keep it private.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
${services.join("\n")}
  ],
  sockets = [(name = "http", address = ${lit(o.listen)}, http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [(name = ${lit(moduleName)}, esModule = embed ${lit(o.modulePath)})],
  compatibilityDate = ${lit(o.compatibilityDate)},
  compatibilityFlags = [${o.compatibilityDate < NODEJS_COMPAT_DEFAULT_FROM ? '"nodejs_compat"' : ""}],
  bindings = [
${bindings.join("\n")}
  ],
);
`;
}
