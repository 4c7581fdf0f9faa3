// The Prometheus endpoint, off unless metrics_port is set: GET /metrics and GET /healthz on
// metrics_listen_addr:metrics_port. The only importer of prom-client.
//
// The pgbouncer_* series carry the exact names and labels prometheus-community/pgbouncer_exporter
// gives them (it scrapes PgBouncer's console), so dashboards and alerts made for PgBouncer work
// unchanged. Nothing here runs on the hot path: every value is read on scrape from the live state
// lists and the plain-number stats, through the same records SHOW prints (admin/show.ts).
// pgpool_* series go beyond PgBouncer: duration histograms, client logins and TLS handshakes,
// certificate expiry, reload outcomes, which relay path runs.
//
// A multi-worker instance is scraped once, at its main process, which asks every worker for its
// series and adds them up with prom-client's cluster aggregation (AggregatorRegistry.aggregate):
// counts and totals are summed; settings, the version and certificate expiry are taken from one
// worker, maxwait is the longest.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics, type Aggregator, type Metric, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { databaseRecords, listRecords, poolRecords, statsTotals, type DatabaseRecord, type PoolRecord, type ShowHost } from '../admin/show.js';
import { ioMode } from '../net/io.js';
import type { PoolStats } from '../pool/pool.js';
import { LOGIN_REFUSALS, TLS_FAILURES, allTimings, loginStats, reloads, tlsStats, type Buckets, type DbTimings } from './stats.js';

/** What the endpoint reads; App provides it. */
export interface MetricsHost extends ShowHost {
  /** A shutdown is under way: /healthz says 503 so load balancers stop sending clients. */
  readonly stopping: boolean;
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Everything the pgbouncer_* series need, read once per scrape. */
interface Snapshot {
  readonly pools: PoolRecord[];
  readonly databases: DatabaseRecord[];
  readonly lists: Map<string, number>;
  readonly totals: Map<string, PoolStats>;
}

function snapshot(h: ShowHost): Snapshot {
  return { pools: poolRecords(h), databases: databaseRecords(h), lists: new Map(listRecords(h)), totals: statsTotals(h) };
}

type Labels = Record<string, string>;

/** A gauge whose samples are computed on scrape; `aggregator` says how workers' values combine. */
function gauge(reg: Registry, name: string, help: string, labelNames: string[], read: () => [Labels, number][], aggregator: Aggregator = 'sum'): void {
  new Gauge({
    name,
    help,
    labelNames,
    aggregator,
    registers: [reg],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.set(labels, value);
    },
  });
}

/** A counter whose running totals are kept elsewhere (as plain numbers) and copied on scrape. */
function counter(reg: Registry, name: string, help: string, labelNames: string[], read: () => [Labels, number][]): void {
  new Counter({
    name,
    help,
    labelNames,
    registers: [reg],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}

/**
 * A histogram whose buckets are counted elsewhere as plain numbers (metrics/stats.ts), one
 * Buckets per label set. prom-client's Histogram can only observe values one by one, so this is a
 * metric object of its own: the registry asks any registered metric for get() and formats what it
 * returns, _bucket/_sum/_count lines included.
 */
function plainHistogram(reg: Registry, name: string, help: string, labelNames: string[], read: () => [Labels, Buckets][]): void {
  const metric = {
    name,
    help,
    labelNames,
    type: 'histogram',
    aggregator: 'sum',
    get() {
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
      for (const [labels, b] of read()) {
        let cumulative = 0;
        b.bounds.forEach((le, k) => {
          cumulative += b.counts[k]!;
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
        });
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: b.count });
        values.push({ metricName: `${name}_sum`, labels, value: b.sum });
        values.push({ metricName: `${name}_count`, labels, value: b.count });
      }
      return Promise.resolve({ name, help, type: 'histogram', aggregator: 'sum', values });
    },
  };
  reg.registerMetric(metric as unknown as Metric);
}

/** A per-database duration histogram (metrics/stats.ts timings). */
function dbHistogram(reg: Registry, name: string, help: string, pick: (t: DbTimings) => Buckets): void {
  plainHistogram(reg, name, help, ['database'], () => [...allTimings()].map(([database, t]) => [{ database }, pick(t)]));
}

/** Certificate settings whose expiry is watched. */
const CERT_SETTINGS = ['client_tls_cert_file', 'client_tls_ca_file', 'server_tls_cert_file', 'server_tls_ca_file'] as const;

/** Seconds until the first certificate in `file` expires (negative once it has); null when the
 * file cannot be read or holds no certificate. Read on each scrape, so a rotated file shows. */
function secondsToExpiry(file: string): number | null {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  let first: number | null = null;
  for (const m of pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)) {
    try {
      const t = Date.parse(new X509Certificate(m[0]).validTo);
      if (first === null || t < first) first = t;
    } catch {
      // A block that does not parse is the TLS setup's problem to report, not the scrape's.
    }
  }
  return first === null ? null : (first - Date.now()) / 1000;
}

/** µs → s. Dividing gives the double nearest the exact value (multiplying by 1e-6 may not). */
const seconds = (us: number): number => us / 1e6;

/** Every series, registered in a private registry. */
function buildRegistry(h: MetricsHost): { registry: Registry; refresh(): void } {
  const reg = new Registry();
  let snap = snapshot(h);

  gauge(reg, 'pgbouncer_up', 'The pooler answered this scrape (always 1: the pooler is the exporter)', [], () => [[{}, 1]], 'first');
  gauge(reg, 'pgbouncer_version_info', 'The pooler version, as SHOW VERSION prints it', ['version'], () => [
    [{ version: `pgpool-ts ${h.version}` }, 1],
  ], 'first');

  // SHOW POOLS, labels {database, user}.
  const pool = (name: string, help: string, value: (p: PoolRecord) => number, aggregator: Aggregator = 'sum'): void =>
    gauge(reg, `pgbouncer_pools_${name}`, help, ['database', 'user'], () =>
      snap.pools.map((p) => [{ database: p.database, user: p.user }, value(p)]),
    aggregator);
  pool('client_active_connections', 'Client connections linked to a server or idle between transactions (cl_active)', (p) => p.clActive);
  pool('client_waiting_connections', 'Client connections waiting for a server (cl_waiting)', (p) => p.clWaiting);
  pool('client_active_cancel_connections', 'Clients whose cancel request was forwarded (cl_active_cancel_req)', (p) => p.clActiveCancelReq);
  pool('client_waiting_cancel_connections', 'Clients whose cancel request waits to be forwarded (cl_waiting_cancel_req)', (p) => p.clWaitingCancelReq);
  pool('server_active_connections', 'Server connections linked to a client (sv_active)', (p) => p.svActive);
  pool('server_active_cancel_connections', 'Server connections forwarding a cancel request (sv_active_cancel)', (p) => p.clActiveCancelReq);
  pool('server_being_canceled_connections', 'Servers waiting for cancel requests against them to finish (sv_being_canceled)', (p) => p.svBeingCanceled);
  pool('server_idle_connections', 'Server connections idle and ready for a client (sv_idle)', (p) => p.svIdle);
  pool('server_used_connections', 'Server connections running server_reset_query (sv_used)', (p) => p.svUsed);
  pool('server_testing_connections', 'Server connections running server_check_query (sv_tested)', (p) => p.svTested);
  pool('server_login_connections', 'Server connections logging in (sv_login)', (p) => p.svLogin);
  pool('client_maxwait_seconds', 'Age of the oldest waiting client, in seconds (maxwait)', (p) => seconds(p.maxwaitUs), 'max');

  // SHOW STATS_TOTALS, label {database}; times are µs there, seconds here.
  const total = (name: string, help: string, value: (s: PoolStats) => number): void =>
    counter(reg, `pgbouncer_stats_totals_${name}`, help, ['database'], () =>
      [...snap.totals].map(([database, s]) => [{ database }, value(s)]),
    );
  total('server_assignments_total', 'Times a server connection was assigned to a client', (s) => s.serverAssignments);
  total('queries_pooled_total', 'SQL queries pooled', (s) => s.queries);
  total('queries_duration_seconds_total', 'Seconds spent connected to PostgreSQL executing queries', (s) => seconds(s.queryTime));
  total('received_bytes_total', 'Bytes received from clients', (s) => s.bytesReceived);
  total('sent_bytes_total', 'Bytes sent to clients', (s) => s.bytesSent);
  total('client_wait_seconds_total', 'Seconds clients spent waiting for a server', (s) => seconds(s.waitTime));
  total('sql_transactions_pooled_total', 'SQL transactions pooled', (s) => s.xacts);
  total('server_in_transaction_seconds_total', 'Seconds spent connected to PostgreSQL in a transaction', (s) => seconds(s.xactTime));
  total('client_parses_total', 'Parse messages from clients tracked as prepared statements (not tracked: 0)', (s) => s.clientParses);
  total('server_parses_total', 'Parse messages sent to PostgreSQL for tracked prepared statements (not tracked: 0)', (s) => s.serverParses);
  total('binds_total', 'Bind messages for tracked prepared statements (not tracked: 0)', (s) => s.binds);

  // SHOW DATABASES, labels {name, host, port, database, force_user, pool_mode}.
  const db = (name: string, help: string, value: (d: DatabaseRecord) => number, aggregator: Aggregator = 'first'): void =>
    gauge(reg, `pgbouncer_databases_${name}`, help, ['name', 'host', 'port', 'database', 'force_user', 'pool_mode'], () =>
      snap.databases.map((d) => [
        { name: d.name, host: d.host ?? '', port: String(d.port), database: d.database, force_user: d.forceUser ?? '', pool_mode: d.poolMode ?? '' },
        value(d),
      ]),
    aggregator);
  db('pool_size', 'Maximum number of server connections', (d) => d.poolSize);
  db('reserve_pool', 'Maximum number of additional connections for this database', (d) => d.reservePoolSize);
  db('max_connections', 'Maximum number of server connections for this database (0 = unlimited)', (d) => d.maxConnections);
  db('current_connections', 'Current number of server connections for this database', (d) => d.currentConnections, 'sum');
  db('paused', '1 if this database is paused, else 0', (d) => (d.paused ? 1 : 0), 'max');
  db('disabled', '1 if this database is disabled, else 0', (d) => (d.disabled ? 1 : 0), 'max');

  // SHOW LISTS, no labels; the exporter renames the dns_* ones.
  const LISTS: [string, string, string][] = [
    ['databases', 'databases', 'Count of databases'],
    ['users', 'users', 'Count of users'],
    ['pools', 'pools', 'Count of pools'],
    ['free_clients', 'free_clients', 'Count of free clients'],
    ['used_clients', 'used_clients', 'Count of used clients'],
    ['login_clients', 'login_clients', 'Count of clients in login state'],
    ['free_servers', 'free_servers', 'Count of free servers'],
    ['used_servers', 'used_servers', 'Count of used servers'],
    ['dns_names', 'cached_dns_names', 'Count of DNS names in the cache'],
    ['dns_zones', 'cached_dns_zones', 'Count of DNS zones in the cache'],
    ['dns_queries', 'in_flight_dns_queries', 'Count of in-flight DNS queries'],
  ];
  // Counts of configuration (databases, users) and of pools are the same in every worker.
  const CONFIG_LISTS = new Set(['databases', 'users', 'pools', 'dns_names', 'dns_zones']);
  for (const [list, name, help] of LISTS) {
    gauge(reg, `pgbouncer_${name}`, help, [], () => [[{}, snap.lists.get(list) ?? 0]], CONFIG_LISTS.has(list) ? 'max' : 'sum');
  }

  // SHOW CONFIG: the two the exporter reads.
  gauge(reg, 'pgbouncer_config_max_client_connections', 'Config maximum number of client connections', [], () => [[{}, h.cfg.maxClientConn]], 'first');
  gauge(reg, 'pgbouncer_config_max_user_connections', 'Config maximum number of server connections per user', [], () => [
    [{}, h.cfg.maxUserConnections],
  ], 'first');

  // Beyond PgBouncer.
  dbHistogram(reg, 'pgpool_client_wait_seconds', 'Time a client waited for a server connection', (t) => t.wait);
  dbHistogram(reg, 'pgpool_query_duration_seconds', 'Time from a query to the ReadyForQuery that answers it', (t) => t.query);
  dbHistogram(reg, 'pgpool_transaction_duration_seconds', 'Time from the first query of a transaction to its end', (t) => t.xact);
  plainHistogram(reg, 'pgpool_client_login_duration_seconds', 'Time from accepting a client connection to its successful authentication, TLS handshake included', ['tls'], () => [
    [{ tls: 'yes' }, loginStats.durationTls],
    [{ tls: 'no' }, loginStats.durationPlain],
  ]);
  counter(reg, 'pgpool_client_logins_refused_total', 'Client logins the pooler refused, by reason', ['reason'], () =>
    LOGIN_REFUSALS.map((reason) => [{ reason }, loginStats.refusedBy[reason]]),
  );
  plainHistogram(reg, 'pgpool_client_tls_handshake_duration_seconds', 'Duration of successful client TLS handshakes', [], () => [[{}, tlsStats.handshake]]);
  counter(reg, 'pgpool_client_tls_handshake_failures_total', 'Client TLS handshakes that failed, by reason', ['reason'], () =>
    TLS_FAILURES.map((reason) => [{ reason }, tlsStats.failedBy[reason]]),
  );
  gauge(reg, 'pgpool_tls_certificate_expiry_seconds', 'Seconds until the first certificate in a configured file expires (negative: expired)', ['setting', 'file'], () => {
    const cfg = h.cfg;
    const files: Record<(typeof CERT_SETTINGS)[number], string | null> = {
      client_tls_cert_file: cfg.clientTls.certFile,
      client_tls_ca_file: cfg.clientTls.caFile,
      server_tls_cert_file: cfg.serverTls.certFile,
      server_tls_ca_file: cfg.serverTls.caFile === 'system' ? null : cfg.serverTls.caFile,
    };
    const out: [Labels, number][] = [];
    for (const setting of CERT_SETTINGS) {
      const file = files[setting];
      const left = file === null ? null : secondsToExpiry(file);
      if (file !== null && left !== null) out.push([{ setting, file }, left]);
    }
    return out;
  }, 'first');
  counter(reg, 'pgpool_config_reloads_total', 'Configuration reloads (SIGHUP, RELOAD, SET) by result', ['result'], () => [
    [{ result: 'success' }, reloads.ok],
    [{ result: 'failure' }, reloads.failed],
  ]);
  gauge(reg, 'pgpool_relay_stream_handles', "1 when the hot path runs on Node's stream handles, 0 when it fell back to the stream API (the log says why)", [], () => [
    [{}, ioMode() === 'handles' ? 1 : 0],
  ]);

  collectDefaultMetrics({ register: reg });
  // Gauges that prom-client names *_total, which promtool rejects (only counters may end so);
  // nodejs_active_handles and friends carry the same numbers by type.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    reg.removeSingleMetric(name);
  }

  return {
    registry: reg,
    refresh() {
      snap = snapshot(h);
    },
  };
}

/** Why /healthz says 503, or null while the pooler accepts and serves clients. */
export function unhealthy(h: MetricsHost): string | null {
  if (h.stopping) return 'shutting down';
  if (h.registry.suspended) return 'suspended';
  if (h.registry.pausedAll) return 'paused';
  return null;
}

/** What the HTTP endpoint serves: the text of /metrics, and why /healthz is 503 (or null). */
export interface MetricsSource {
  text(): Promise<{ contentType: string; body: string }>;
  health(): string | null | Promise<string | null>;
}

/** A worker's series, for its instance's main process to aggregate (metricsSeries in a worker). */
export type WorkerSeries = MetricObjectWithValues<MetricValue<string>>[];

/** This process's series and health, read from `h` on each call. */
export function metricsOf(h: MetricsHost): { source: MetricsSource; series(): Promise<WorkerSeries> } {
  const { registry, refresh } = buildRegistry(h);
  return {
    source: {
      text: async () => {
        refresh();
        return { contentType: registry.contentType, body: await registry.metrics() };
      },
      health: () => unhealthy(h),
    },
    series: async () => {
      refresh();
      return (await registry.getMetricsAsJSON()) as WorkerSeries;
    },
  };
}

/** The workers' series added up into one exposition (prom-client's cluster aggregation). */
export async function aggregateSeries(parts: readonly WorkerSeries[]): Promise<{ contentType: string; body: string }> {
  const registry = AggregatorRegistry.aggregate(parts as WorkerSeries[]);
  return { contentType: registry.contentType, body: await registry.metrics() };
}

/** The pooler's own endpoint (one process, or an instance's main process with `source`). */
export function startMetrics(h: MetricsHost): Promise<MetricsServer> {
  return serveMetrics(h.cfg.metricsListenAddr, h.cfg.metricsPort, metricsOf(h).source);
}

export function serveMetrics(addr: string, port: number, source: MetricsSource): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      source.text().then(
        (m) => res.writeHead(200, { 'content-type': m.contentType }).end(req.method === 'HEAD' ? undefined : m.body),
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
      );
    } else if (path === '/healthz') {
      void Promise.resolve(source.health()).then((why) => {
        res.writeHead(why === null ? 200 : 503, { 'content-type': 'text/plain' }).end(`${why ?? 'ok'}\n`);
      });
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, addr, () => {
      server.removeListener('error', reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
