// What pgbench can be pointed at: pgpool-ts and PgBouncer with one and the same ini (only the port
// differs), PostgreSQL itself, and two proxies that relay bytes without understanding them: Node's
// floor (on the stream handles, the least any Node proxy pays; TLS on both sides in TLS flavors)
// and a naive `pipe()` proxy (what Node's streams cost).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BENCH_DB, BENCH_USER, cleanEnv, serviceUser, type Cluster } from './postgres.js';
import { processTreeTicks, processUserTicks } from './cpu.js';
import { Proc, freePort, sleep, waitForPort } from './procs.js';

export type TargetName = 'pgpool-ts' | 'pgpool-ts-w2' | 'pgbouncer' | 'direct' | 'floor' | 'naive-proxy';

/** Run order within a round (A B C D A B C D …); also the order of table rows and chart bars. */
export const TARGET_ORDER: readonly TargetName[] = ['pgpool-ts', 'pgpool-ts-w2', 'pgbouncer', 'direct', 'floor', 'naive-proxy'];

/** pgpool-ts with `workers = 2`: only in the scenarios that name it (scenarios.ts). */
export const WORKERS_TARGET: TargetName = 'pgpool-ts-w2';

export const TARGET_LABEL: Record<TargetName, string> = {
  'pgpool-ts': 'pgpool-ts',
  'pgpool-ts-w2': 'pgpool-ts, 2 workers',
  pgbouncer: 'PgBouncer',
  direct: 'direct',
  floor: 'Node floor',
  'naive-proxy': 'naive proxy',
};

/** The pooler settings both poolers get. Log settings are left at their (shared) defaults. */
export const POOLER_SETTINGS: Record<string, string> = {
  pool_mode: 'transaction',
  default_pool_size: '20',
  // Room for the 10 000 idle clients of the idle scenarios.
  max_client_conn: '12000',
  auth_type: 'scram-sha-256',
};

/** What a scenario needs of the targets besides their kind: TLS on both sides of the poolers
 * (client_tls_sslmode=require, server_tls_sslmode=verify-full; sslmode=require for direct), and
 * a listen_backlog other than the default. */
export interface Flavor {
  tls: boolean;
  backlog: number | null;
}

export const PLAIN: Flavor = { tls: false, backlog: null };
export const TLS: Flavor = { tls: true, backlog: null };

function flavorKey(f: Flavor): string {
  return `${f.tls ? 'tls' : 'plain'}${f.backlog === null ? '' : `-backlog${f.backlog}`}`;
}

export interface Target {
  readonly name: TargetName;
  readonly flavor: Flavor;
  readonly port: number;
  /** The process in front of PostgreSQL, whose CPU time is charged per transaction; null for direct. */
  readonly proc: Proc | null;
  /** CPU ticks used so far by `proc` and, for a multi-process pooler, by its live children (the
   * workers) and the children it reaped: each entry one process, the first `proc` itself. */
  cpuTicks(): number[] | null;
  /** Of those, the user-space ticks, all processes together. */
  userTicks(): number | null;
  /** Bytes the process allocated on V8's heap since it started (bench/heap-meter.ts), for the Node
   * targets; null for the others (or when the meter does not answer). */
  heapBytes(): Promise<number | null>;
  /** (Re)start it; direct has nothing to start. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** dist/bench → dist/src/main.js, dist/bench/naive-proxy.js and dist/bench/floor-proxy.js. */
const PGPOOL_MAIN = path.join(HERE, '../src/main.js');
const NAIVE_PROXY = path.join(HERE, 'naive-proxy.js');
const FLOOR_PROXY = path.join(HERE, 'floor-proxy.js');
const HEAP_METER = pathToFileURL(path.join(HERE, 'heap-meter.js')).href;

/** The PgBouncer binary: PGPOOL_BENCH_PGBOUNCER, else pgbouncer on PATH. */
export function pgbouncerBinary(): string {
  return process.env.PGPOOL_BENCH_PGBOUNCER || 'pgbouncer';
}

export function pgbouncerVersion(): string {
  try {
    return execFileSync(pgbouncerBinary(), ['--version'], { encoding: 'utf8' }).split('\n')[0]?.trim() ?? 'unknown';
  } catch (err) {
    return `not found (${(err as Error).message.split('\n')[0]})`;
  }
}

function iniText(port: number, cluster: Cluster, authFile: string, flavor: Flavor, workers: number): string {
  const settings: Record<string, string> = {
    ...(workers > 1 ? { workers: String(workers) } : {}),
    listen_addr: '127.0.0.1',
    listen_port: String(port),
    // TCP only: pgbench connects to 127.0.0.1, and no socket can clash with anything else's.
    unix_socket_dir: '',
    auth_file: authFile,
    ...POOLER_SETTINGS,
    ...(flavor.backlog === null ? {} : { listen_backlog: String(flavor.backlog) }),
    ...(flavor.tls
      ? {
          client_tls_sslmode: 'require',
          client_tls_cert_file: cluster.tls.cert,
          client_tls_key_file: cluster.tls.key,
          server_tls_sslmode: 'verify-full',
          server_tls_ca_file: cluster.tls.ca,
        }
      : { server_tls_sslmode: 'disable' }),
  };
  return [
    '[databases]',
    // verify-full checks this name against the certificate's SANs (DNS:localhost, IP:127.0.0.1).
    `${BENCH_DB} = host=127.0.0.1 port=${cluster.port} dbname=${BENCH_DB}`,
    '',
    '[pgbouncer]',
    ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
    '',
  ].join('\n');
}

class ProcessTarget implements Target {
  proc: Proc | null = null;
  constructor(
    readonly name: TargetName,
    readonly flavor: Flavor,
    readonly port: number,
    private readonly launch: () => Proc,
    /** Its children are part of it (pgpool-ts's workers). */
    private readonly tree = false,
    /** Where bench/heap-meter.ts writes the process's heap allocation (single-process Node targets). */
    private readonly heapFile: string | null = null,
  ) {}

  cpuTicks(): number[] | null {
    const proc = this.proc;
    if (proc === null) return null;
    return this.tree ? processTreeTicks(proc.pid) : [proc.cpuTicks() ?? 0];
  }

  userTicks(): number | null {
    return this.proc === null ? null : processUserTicks(this.proc.pid, this.tree);
  }

  private heapAsked = 0;

  async heapBytes(): Promise<number | null> {
    const file = this.heapFile;
    if (file === null || this.proc === null || !this.proc.alive()) return null;
    const seq = String(++this.heapAsked);
    fs.writeFileSync(`${file}.ask`, seq);
    for (const deadline = Date.now() + 2_000; Date.now() < deadline; await sleep(5)) {
      let answer: string;
      try {
        answer = fs.readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      const [got, bytes] = answer.split(' ');
      if (got === seq) return Number(bytes);
    }
    return null;
  }

  async start(): Promise<void> {
    this.proc = this.launch();
    await waitForPort(this.proc, '127.0.0.1', this.port);
  }

  async stop(): Promise<void> {
    // SIGINT to both poolers: PgBouncer's and pgpool-ts's "safe shutdown" (wait for servers to be
    // released), with a short grace period since no client is connected by then.
    await this.proc?.stop('SIGINT', 10_000);
  }
}

/**
 * The targets, made and started on first use: a scenario over TLS or with a small backlog gets
 * its own pgpool-ts and PgBouncer processes, so no run inherits another flavor's state. The
 * userlist holds the SCRAM secret PostgreSQL stores for `bench`, as a userlist from pg_authid
 * would: the poolers verify clients without a plain password and log in to the server with the
 * keys the client's SCRAM exchange proved.
 */
export class Targets {
  private readonly made = new Map<string, Target>();

  private constructor(
    private readonly cluster: Cluster,
    private readonly dir: string,
    private readonly authFile: string,
  ) {}

  static async create(cluster: Cluster, dir: string): Promise<Targets> {
    const authFile = path.join(dir, 'userlist.txt');
    fs.writeFileSync(authFile, `"${BENCH_USER}" "${await cluster.benchSecret()}"\n`, { mode: 0o644 });
    return new Targets(cluster, dir, authFile);
  }

  /** The started target; null when `name` does not come in `flavor` (the proxies have no backlog
   * variant, and the naive one no TLS variant: it would only pass PostgreSQL's own TLS through). */
  async get(name: TargetName, flavor: Flavor): Promise<Target | null> {
    const key = `${name}/${flavorKey(flavor)}`;
    let t = this.made.get(key) ?? null;
    if (t === null) {
      t = await this.make(name, flavor, key.replace('/', '-'));
      if (t === null) return null;
      this.made.set(key, t);
      await t.start();
    }
    return t;
  }

  /** The running pooler processes (for CPU sampling). */
  pids(): number[] {
    return [...this.made.values()].flatMap((t) => (t.proc?.alive() ? [t.proc.pid] : []));
  }

  async stopAll(): Promise<void> {
    for (const t of this.made.values()) await t.stop().catch(() => undefined);
  }

  private async make(name: TargetName, flavor: Flavor, stem: string): Promise<Target | null> {
    const cluster = this.cluster;
    if (name === 'direct') {
      return flavor.backlog !== null ? null : { name, flavor, port: cluster.port, proc: null, cpuTicks: () => null, userTicks: () => null, heapBytes: async () => null, start: async () => undefined, stop: async () => undefined };
    }
    const port = await freePort();
    const logFile = path.join(this.dir, `${stem}.log`);
    // The Node targets count their heap allocation for the bench (bench/heap-meter.ts).
    const heapFile = path.join(this.dir, `${stem}.heap`);
    const meter = ['--import', HEAP_METER];
    const meterEnv = cleanEnv({ PGPOOL_HEAP_METER_FILE: heapFile });
    if (name === 'naive-proxy' || name === 'floor') {
      if ((name === 'naive-proxy' && flavor.tls) || flavor.backlog !== null) return null;
      const script = name === 'floor' ? FLOOR_PROXY : NAIVE_PROXY;
      const tlsArgs = flavor.tls ? ['--tls', cluster.tls.cert, cluster.tls.key, cluster.tls.ca] : [];
      return new ProcessTarget(
        name,
        flavor,
        port,
        () => new Proc(name, process.execPath, [...meter, script, String(port), '127.0.0.1', String(cluster.port), ...tlsArgs], { logFile, env: meterEnv }),
        false,
        heapFile,
      );
    }
    const ini = path.join(this.dir, `${stem}.ini`);
    const workers = name === WORKERS_TARGET ? 2 : 1;
    fs.writeFileSync(ini, iniText(port, cluster, this.authFile, flavor, workers), { mode: 0o644 });
    if (name === 'pgpool-ts' || name === WORKERS_TARGET) {
      // PGPOOL_BENCH_NODE_ARGS: node flags for pgpool-ts, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
      const nodeArgs = (process.env.PGPOOL_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
      // The heap meter counts one process: not a pooler with workers.
      const metered = workers === 1;
      const launch = () =>
        new Proc(name, process.execPath, [...nodeArgs, ...(metered ? meter : []), PGPOOL_MAIN, '-c', ini], { logFile, env: metered ? meterEnv : cleanEnv() });
      return new ProcessTarget(name, flavor, port, launch, workers > 1, metered ? heapFile : null);
    }
    const user = serviceUser();
    // PgBouncer refuses root; it runs as the same OS user as PostgreSQL, spawned with that uid so
    // the PID (for CPU accounting and signals) is PgBouncer's own.
    return new ProcessTarget(name, flavor, port, () =>
      new Proc(name, pgbouncerBinary(), [ini], { logFile, env: cleanEnv(), cwd: this.dir, uid: user?.uid, gid: user?.gid }),
    );
  }
}
