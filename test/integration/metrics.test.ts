// The Prometheus endpoint through the real pooler: the series prometheus-community's
// pgbouncer_exporter would produce from PgBouncer's console, with the same names and labels and
// values that match SHOW; promtool's own check of the exposition; /healthz through the pooler's
// life; the pgpool_* series beyond PgBouncer. And the real-tool check: Debian's
// prometheus-pgbouncer-exporter, pointed at pgpool-ts's console, exports its series.
//
// The cluster runs with TLS, so the same pooler also shows server-side TLS in SHOW SERVERS and has
// certificate files for the expiry gauge.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { sslRequest } from '../support/bytes.js';
import { connectClient, type PgError } from '../support/pg-client.js';
import { USERS } from '../support/pg-cluster.js';
import { freePort, startPooler, type IniSections } from '../support/pooler.js';
import { runCommand } from '../support/run-cmd.js';
import { useSetup } from '../support/suite.js';
import { sleep } from '../support/wait.js';

const ADMIN_PASSWORD = 'adminpass';
let metricsPort = 0;

const { c, p } = useSetup({
  cluster: { name: 'metrics', ssl: true },
  prepare: async () => {
    metricsPort = await freePort();
  },
  pooler: {
    ini: () => ini(),
    options: { userlist: { admin: ADMIN_PASSWORD, stats: 'statspass', [USERS.md5.name]: USERS.md5.password } },
  },
  started: async () => {
    // Some traffic on both databases, with one client that had to wait.
    const a = await connect('p0');
    const b = await connect('p1');
    await a.query('SELECT 1');
    await b.query('BEGIN');
    await b.query('SELECT pg_sleep(0.02)');
    await b.query('COMMIT');
    await Promise.all([a.end(), b.end()]);
  },
});

function ini(extra: Record<string, string> = {}): IniSections {
  const pki = c().pki!;
  return {
    pgbouncer: {
      auth_type: 'md5',
      pool_mode: 'transaction',
      admin_users: 'admin',
      stats_users: 'stats',
      metrics_port: String(metricsPort),
      server_tls_sslmode: 'verify-full',
      server_tls_ca_file: pki.caBundle,
      client_tls_sslmode: 'allow',
      client_tls_key_file: pki.server.key,
      client_tls_cert_file: pki.server.chain,
      client_tls_ca_file: pki.caBundle,
      max_client_conn: '50',
      max_user_connections: '30',
      ...extra,
    },
    databases: { p0: `host=localhost port=${c().port} dbname=p0`, p1: `host=localhost port=${c().port} dbname=p1 pool_size=3` },
  };
}

function connect(db: string, user: string = USERS.md5.name, password: string = USERS.md5.password): Promise<pg.Client> {
  return connectClient({ connectionString: p().url(user, password, db), query_timeout: 20_000 });
}

async function consoleRows(sql: string): Promise<Record<string, string>[]> {
  const con = await connect('pgbouncer', 'admin', ADMIN_PASSWORD);
  try {
    const r = await con.query({ text: sql, types: { getTypeParser: () => (v: string) => v } });
    return r.rows as Record<string, string>[];
  } finally {
    await con.end();
  }
}

async function http(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`);
  return { status: res.status, body: await res.text() };
}

interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** The exposition text format → series name → samples (HELP/TYPE lines skipped). */
function parseExposition(text: string): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const list = out.get(m[1]!) ?? [];
    list.push({ labels, value: Number(m[3]) });
    out.set(m[1]!, list);
  }
  return out;
}

function sample(series: Map<string, Sample[]>, name: string, labels: Record<string, string> = {}): number {
  const found = (series.get(name) ?? []).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found, `no sample ${name}${JSON.stringify(labels)}`);
  return found.value;
}

async function scrape(): Promise<{ text: string; series: Map<string, Sample[]> }> {
  const r = await http(metricsPort, '/metrics');
  assert.equal(r.status, 200);
  return { text: r.body, series: parseExposition(r.body) };
}

/** Whether a command is installed; when it is not, the reason for skipping is printed. */
async function installed(cmd: string, pkg: string): Promise<boolean> {
  const r = await runCommand('sh', ['-c', `command -v ${cmd}`]);
  if (r.code === 0) return true;
  process.stdout.write(`# skipped: ${cmd} is not installed (Debian package ${pkg}: apt-get install -y ${pkg})\n`);
  return false;
}

// ------------------------------------------------------------------------------------------------

/** Series the exporter derives from PgBouncer's console, by label set. */
const EXPORTER_SERIES: Record<string, string[]> = {
  'database,user': [
    'client_active_connections', 'client_waiting_connections', 'client_active_cancel_connections',
    'client_waiting_cancel_connections', 'server_active_connections', 'server_active_cancel_connections',
    'server_being_canceled_connections', 'server_idle_connections', 'server_used_connections',
    'server_testing_connections', 'server_login_connections', 'client_maxwait_seconds',
  ].map((n) => `pgbouncer_pools_${n}`),
  database: [
    'queries_pooled_total', 'queries_duration_seconds_total', 'received_bytes_total', 'sent_bytes_total',
    'client_wait_seconds_total', 'sql_transactions_pooled_total', 'server_in_transaction_seconds_total',
    'client_parses_total', 'server_parses_total', 'binds_total', 'server_assignments_total',
  ].map((n) => `pgbouncer_stats_totals_${n}`),
  'database,force_user,host,name,pool_mode,port': ['pool_size', 'reserve_pool', 'max_connections', 'current_connections', 'paused', 'disabled'].map(
    (n) => `pgbouncer_databases_${n}`,
  ),
  '': [
    'pgbouncer_up', 'pgbouncer_databases', 'pgbouncer_users', 'pgbouncer_pools', 'pgbouncer_free_clients',
    'pgbouncer_used_clients', 'pgbouncer_login_clients', 'pgbouncer_free_servers', 'pgbouncer_used_servers',
    'pgbouncer_cached_dns_names', 'pgbouncer_cached_dns_zones', 'pgbouncer_in_flight_dns_queries',
    'pgbouncer_config_max_client_connections', 'pgbouncer_config_max_user_connections',
  ],
  version: ['pgbouncer_version_info'],
};

describe('/metrics', () => {
  it('has every pgbouncer_exporter series with its exact labels, with values SHOW agrees with', async () => {
    const { text, series } = await scrape();
    for (const [labelSet, names] of Object.entries(EXPORTER_SERIES)) {
      for (const name of names) {
        const samples = series.get(name);
        assert.ok(samples !== undefined && samples.length > 0, `missing ${name}`);
        for (const s of samples) assert.equal(Object.keys(s.labels).sort().join(','), labelSet, name);
      }
    }
    assert.match(text, /^# TYPE pgbouncer_stats_totals_queries_pooled_total counter$/m);
    assert.match(text, /^# TYPE pgbouncer_pools_server_idle_connections gauge$/m);
    assert.equal(sample(series, 'pgbouncer_up'), 1);
    const version = (await consoleRows('SHOW VERSION'))[0]!.version!;
    assert.equal(sample(series, 'pgbouncer_version_info', { version }), 1);
    assert.equal(sample(series, 'pgbouncer_config_max_client_connections'), 50);
    assert.equal(sample(series, 'pgbouncer_config_max_user_connections'), 30);

    const pools = await consoleRows('SHOW POOLS');
    const p0 = pools.find((r) => r.database === 'p0' && r.user === USERS.md5.name)!;
    assert.equal(sample(series, 'pgbouncer_pools_server_idle_connections', { database: 'p0', user: USERS.md5.name }), Number(p0.sv_idle));
    const totals = (await consoleRows('SHOW STATS_TOTALS')).find((r) => r.database === 'p1')!;
    assert.equal(sample(series, 'pgbouncer_stats_totals_queries_pooled_total', { database: 'p1' }), Number(totals.query_count));
    assert.equal(sample(series, 'pgbouncer_stats_totals_sql_transactions_pooled_total', { database: 'p1' }), Number(totals.xact_count));
    assert.equal(sample(series, 'pgbouncer_stats_totals_server_in_transaction_seconds_total', { database: 'p1' }), Number(totals.xact_time) / 1e6);
    const dbLabels = { name: 'p1', host: 'localhost', port: String(c().port), database: 'p1', force_user: '', pool_mode: '' };
    assert.equal(sample(series, 'pgbouncer_databases_pool_size', dbLabels), 3);
    const lists = new Map((await consoleRows('SHOW LISTS')).map((r) => [r.list, Number(r.items)]));
    assert.equal(sample(series, 'pgbouncer_databases'), lists.get('databases'));
    assert.equal(sample(series, 'pgbouncer_used_servers'), lists.get('used_servers'));
    // Process metrics come along.
    assert.ok(series.has('process_cpu_user_seconds_total') && series.has('nodejs_heap_size_used_bytes'));
  });

  it('reports the prepared-statement counters SHOW STATS reports (they were always 0 here)', async () => {
    const app = await connect('p0');
    try {
      // Named statements in transaction mode: tracked, so each client Parse and Bind is counted.
      for (let k = 0; k < 3; k++) await app.query({ name: `counted${k}`, text: `SELECT $1::int + ${k} AS v`, values: [k] });
      await app.query({ name: 'counted0', text: 'SELECT $1::int + 0 AS v', values: [7] });
    } finally {
      await app.end();
    }
    const totals = (await consoleRows('SHOW STATS_TOTALS')).find((r) => r.database === 'p0')!;
    assert.ok(Number(totals.client_parse_count) >= 3 && Number(totals.bind_count) >= 4, JSON.stringify(totals));
    const { series } = await scrape();
    assert.equal(sample(series, 'pgbouncer_stats_totals_client_parses_total', { database: 'p0' }), Number(totals.client_parse_count));
    assert.equal(sample(series, 'pgbouncer_stats_totals_server_parses_total', { database: 'p0' }), Number(totals.server_parse_count));
    assert.equal(sample(series, 'pgbouncer_stats_totals_binds_total', { database: 'p0' }), Number(totals.bind_count));
  });

  it('passes promtool check metrics (its lint included)', async (t) => {
    if (!(await installed('promtool', 'prometheus'))) return t.skip('promtool is not installed (Debian package prometheus)');
    const { text } = await scrape();
    const r = await runCommand('promtool', ['check', 'metrics'], { input: text });
    assert.equal(r.code, 0, `promtool: ${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '');
  });

  it('adds duration histograms, reload counters and certificate expiry beyond PgBouncer', async () => {
    const before = (await scrape()).series;
    const reloadsOk = sample(before, 'pgpool_config_reloads_total', { result: 'success' });
    const reloadsFailed = sample(before, 'pgpool_config_reloads_total', { result: 'failure' });
    await p().writeIni(ini({ default_pool_size: 'many' }));
    p().reload();
    await p().waitForLog(/reload failed/);
    await p().writeIni(ini());
    p().reload();
    await sleep(300);
    const { series } = await scrape();
    assert.equal(sample(series, 'pgpool_config_reloads_total', { result: 'success' }), reloadsOk + 1);
    assert.equal(sample(series, 'pgpool_config_reloads_total', { result: 'failure' }), reloadsFailed + 1);

    for (const name of ['pgpool_query_duration_seconds', 'pgpool_transaction_duration_seconds', 'pgpool_client_wait_seconds']) {
      const count = sample(series, `${name}_count`, { database: 'p1' });
      assert.ok(count > 0, `${name}_count`);
      assert.equal(sample(series, `${name}_bucket`, { database: 'p1', le: '+Inf' }), count);
    }
    // p1's transaction slept 20 ms: no transaction fits the 10 ms bucket, all fit 50 ms.
    assert.equal(sample(series, 'pgpool_transaction_duration_seconds_bucket', { database: 'p1', le: '0.01' }), 0);
    assert.equal(sample(series, 'pgpool_transaction_duration_seconds_bucket', { database: 'p1', le: '0.05' }), 1);

    // The test PKI issues leaves for 30 days.
    const left = sample(series, 'pgpool_tls_certificate_expiry_seconds', { setting: 'client_tls_cert_file', file: c().pki!.server.chain });
    assert.ok(left > 29 * 86400 && left <= 30 * 86400, `client cert expires in ${left} s`);
    assert.ok(sample(series, 'pgpool_tls_certificate_expiry_seconds', { setting: 'server_tls_ca_file' }) > 30 * 86400);
  });

  it('counts client logins and TLS handshakes: a TLS login, a refused login, a failed handshake', async () => {
    const before = (await scrape()).series;
    const count = (series: Map<string, Sample[]>, name: string, labels: Record<string, string> = {}) => sample(series, name, labels);

    // A successful login over TLS.
    const tlsClient = await connectClient({
      host: '127.0.0.1', port: p().port, user: USERS.md5.name, password: USERS.md5.password, database: 'p0',
      ssl: { ca: fs.readFileSync(c().pki!.caBundle, 'utf8'), servername: 'localhost' },
    });
    await tlsClient.query('SELECT 1');
    await tlsClient.end();

    // A refused login: a wrong password.
    await assert.rejects(connect('p0', USERS.md5.name, 'wrong'), (e: PgError) => e.code === '28P01');

    // A failed handshake: the pooler says 'S' to the SSLRequest, then gets an HTTP request.
    await new Promise<void>((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: p().port });
      sock.setTimeout(5_000, () => sock.destroy(new Error('no answer')));
      sock.once('connect', () => sock.write(sslRequest()));
      sock.once('data', (b) => {
        if (b.toString('latin1') !== 'S') reject(new Error(`SSLRequest answered ${JSON.stringify(b.toString('latin1'))}`));
        sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
      });
      sock.on('error', () => undefined);
      sock.once('close', () => resolve());
    });

    const { series } = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => count(series, name, labels) - count(before, name, labels);
    assert.equal(delta('pgpool_client_tls_handshake_duration_seconds_count'), 1);
    assert.equal(delta('pgpool_client_tls_handshake_duration_seconds_bucket', { le: '+Inf' }), 1);
    assert.ok(count(series, 'pgpool_client_tls_handshake_duration_seconds_sum') > count(before, 'pgpool_client_tls_handshake_duration_seconds_sum'));
    assert.equal(delta('pgpool_client_login_duration_seconds_count', { tls: 'yes' }), 1);
    // The refused login is not a login.
    assert.equal(delta('pgpool_client_login_duration_seconds_count', { tls: 'no' }), 0);
    assert.equal(delta('pgpool_client_logins_refused_total', { reason: 'password' }), 1);
    assert.equal(delta('pgpool_client_logins_refused_total', { reason: 'hba' }), 0);
    assert.equal(delta('pgpool_client_tls_handshake_failures_total', { reason: 'not_tls' }), 1);
    // Every reason is there from the start, at 0 until it happens.
    for (const reason of ['password', 'hba', 'cert', 'peer', 'tls', 'max_client_conn', 'timeout', 'protocol']) {
      assert.ok(series.get('pgpool_client_logins_refused_total')!.some((x) => x.labels.reason === reason), reason);
    }
    for (const reason of ['protocol_version', 'no_shared_cipher', 'certificate', 'alpn', 'closed', 'not_tls', 'other']) {
      assert.ok(series.get('pgpool_client_tls_handshake_failures_total')!.some((x) => x.labels.reason === reason), reason);
    }
  });

  it('docs/metrics.md lists every series served, and the Grafana dashboard uses only served series', async () => {
    const { text } = await scrape();
    const served = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
    const doc = await fsp.readFile(path.join(root, 'docs/metrics.md'), 'utf8');
    const documented = new Set([...doc.matchAll(/`((?:pgbouncer|pgpool|process|nodejs)_[a-z0-9_]+)`/g)].map((m) => m[1]!));
    // The doc writes a few families in brace form: nodejs_eventloop_lag_{min,max,…}_seconds.
    for (const m of doc.matchAll(/`((?:process|nodejs)_[a-z0-9_]*)\{([a-z0-9,]+)\}([a-z0-9_]*)`/g)) {
      for (const part of m[2]!.split(',')) documented.add(`${m[1]}${part}${m[3]}`);
    }
    for (const name of served) assert.ok(documented.has(name), `${name} is served but not in docs/metrics.md`);

    // Every query of the dashboard: panel targets and template variables.
    const dashboard = JSON.parse(await fsp.readFile(path.join(root, 'docs/grafana-dashboard.json'), 'utf8')) as {
      panels: { targets?: { expr: string }[] }[];
      templating: { list: { definition?: string }[] };
    };
    const queries = [
      ...dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((t) => t.expr)),
      ...dashboard.templating.list.map((v) => v.definition ?? ''),
    ];
    const used = new Set(queries.flatMap((q) => [...q.matchAll(/\b((?:pgbouncer|pgpool|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]!.replace(/_bucket$/, ''))));
    assert.ok(used.size > 20);
    for (const name of used) assert.ok(served.has(name), `the dashboard uses ${name}, which is not served`);
  });

  it('SHOW SERVERS gives the TLS version and cipher of each server connection', async () => {
    const client = await connect('p0');
    try {
      await client.query('BEGIN');
      const servers = await consoleRows('SHOW SERVERS');
      const mine = servers.find((r) => r.database === 'p0' && r.state === 'active');
      assert.ok(mine, JSON.stringify(servers));
      assert.match(mine.tls ?? '', /^TLSv1\.[23]\/[A-Z0-9_-]+$/);
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
  });

  it('is not served on the PostgreSQL port', async () => {
    const reply = await new Promise<string>((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port: p().port });
      let got = '';
      sock.on('data', (b) => (got += b.toString('latin1')));
      sock.on('error', () => resolve(got));
      sock.on('close', () => resolve(got));
      sock.on('connect', () => sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'));
      sock.setTimeout(3000, () => sock.destroy());
    });
    assert.doesNotMatch(reply, /^HTTP\//);
  });
});

describe('/healthz', () => {
  it('is 200 while accepting, 503 while paused or suspended, and 503 during a shutdown', async () => {
    assert.deepEqual(await http(metricsPort, '/healthz'), { status: 200, body: 'ok\n' });
    const con = await connect('pgbouncer', 'admin', ADMIN_PASSWORD);
    try {
      await con.query('PAUSE');
      assert.deepEqual(await http(metricsPort, '/healthz'), { status: 503, body: 'paused\n' });
      await con.query('RESUME');
      await con.query('SUSPEND');
      assert.equal((await http(metricsPort, '/healthz')).status, 503);
      await con.query('RESUME');
      assert.equal((await http(metricsPort, '/healthz')).status, 200);
      assert.equal((await http(metricsPort, '/nope')).status, 404);
    } finally {
      await con.end();
    }

    // A separate pooler to stop: a client keeps it in its SIGTERM drain while /healthz is read.
    const port = await freePort();
    const draining = await startPooler({ ...ini(), pgbouncer: { ...ini().pgbouncer, metrics_port: String(port) } }, {
      userlist: { [USERS.md5.name]: USERS.md5.password },
    });
    const client = await connectClient({ connectionString: draining.url(USERS.md5.name, USERS.md5.password, 'p0') });
    assert.equal((await http(port, '/healthz')).status, 200);
    process.kill(draining.pid, 'SIGTERM');
    await draining.waitForLog(/shutting down/);
    assert.deepEqual(await http(port, '/healthz'), { status: 503, body: 'shutting down\n' });
    await client.end();
    assert.deepEqual(await draining.exited, { code: 0, signal: null });
  });

  it('is not opened without metrics_port', async () => {
    const port = await freePort();
    const plain = await startPooler({ pgbouncer: { auth_type: 'trust' }, databases: { p0: `host=127.0.0.1 port=${c().port}` } });
    try {
      // The default is no listener at all, on the default address or any other.
      await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`));
      assert.ok(!plain.logs().some((l) => l.includes('metrics on')));
    } finally {
      await plain.stop('SIGTERM');
    }
  });
});

// ------------------------------------------------------------------------------------------------
// Debian's prometheus-pgbouncer-exporter 1.7

/**
 * The exporter predates PgBouncer 1.8: its STATS collector reads `total_requests` (PgBouncer ≥1.8
 * has `total_query_count`), and its DATABASES collector reads `reserve_pool` (PgBouncer ≥1.24 has
 * `reserve_pool_size`). Against PgBouncer itself it crashes the same way. pgpool-ts keeps
 * PgBouncer's current columns, so this wrapper aliases the two old names from the new ones and
 * otherwise runs the packaged exporter unchanged.
 */
const WRAPPER = `
import sys
from prometheus_pgbouncer_exporter import cli, collectors

ALIASES = {'STATS': ('total_requests', 'total_query_count'), 'DATABASES': ('reserve_pool', 'reserve_pool_size')}
_read = collectors.get_data_by_named_column

def read_with_old_names(connection, key):
    rows = _read(connection, key)
    old, new = ALIASES.get(key, (None, None))
    for row in rows:
        if old is not None and old not in row:
            row[old] = row[new]
    return rows

collectors.get_data_by_named_column = read_with_old_names
sys.argv[0] = 'prometheus-pgbouncer-exporter'
cli.main()
`;

describe('Debian prometheus-pgbouncer-exporter', () => {
  it('exports its pgbouncer_* series from the pgpool-ts console', async (t) => {
    const pkg = '/usr/lib/python3/dist-packages/prometheus_pgbouncer_exporter';
    if (!fs.existsSync(pkg)) {
      process.stdout.write('# skipped: prometheus-pgbouncer-exporter is not installed (apt-get install -y prometheus-pgbouncer-exporter)\n');
      return t.skip('prometheus-pgbouncer-exporter is not installed');
    }
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-exporter-'));
    const script = path.join(dir, 'exporter.py');
    await fsp.writeFile(script, WRAPPER);
    const port = await freePort();
    const child = spawn('/usr/bin/python3', [script, '--host', '127.0.0.1', '--port', String(port), '--pgbouncer-host', '127.0.0.1',
      '--pgbouncer-port', String(p().port), '--pgbouncer-user', 'stats'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PGPASSWORD: 'statspass', PGSSLMODE: 'disable' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      let body = '';
      const deadline = Date.now() + 15_000;
      for (;;) {
        const r = await http(port, '/metrics').catch(() => null);
        if (r !== null && r.status === 200) {
          body = r.body;
          break;
        }
        const dead = await Promise.race([exited, sleep(100).then(() => 'alive' as const)]);
        if (dead !== 'alive') assert.fail(`exporter exited (${dead}):\n${output}`);
        if (Date.now() > deadline) assert.fail(`exporter did not serve /metrics:\n${output}`);
      }
      const series = parseExposition(body.split('\n').filter((l) => l.startsWith('pgbouncer_') || l.startsWith('#')).join('\n'));
      const totals = (await consoleRows('SHOW STATS')).find((r) => r.database === 'p1')!;
      assert.equal(sample(series, 'pgbouncer_requests_total', { database: 'p1' }), Number(totals.total_query_count));
      assert.equal(sample(series, 'pgbouncer_received_bytes_total', { database: 'p1' }), Number(totals.total_received));
      assert.equal(sample(series, 'pgbouncer_query_microseconds_total', { database: 'p1' }), Number(totals.total_query_time));
      assert.ok(series.has('pgbouncer_sent_bytes_total'));
      assert.ok(series.has('pgbouncer_active_clients') && series.has('pgbouncer_waiting_clients'));
      assert.equal(sample(series, 'pgbouncer_pool_size', { database: 'p1' }), 3);
      assert.ok(series.has('pgbouncer_reserve_pool'));
      const lists = new Map((await consoleRows('SHOW LISTS')).map((r) => [r.list, Number(r.items)]));
      for (const name of ['databases', 'users', 'pools', 'free_clients', 'used_clients', 'login_clients', 'free_servers',
        'used_servers', 'dns_names', 'dns_zones', 'dns_queries', 'dns_pending']) {
        assert.ok(series.has(`pgbouncer_${name}`), `missing pgbouncer_${name}`);
      }
      assert.equal(sample(series, 'pgbouncer_databases'), lists.get('databases'));
    } finally {
      child.kill('SIGTERM');
      await exited;
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
