// `npm run soak [-- --minutes 30]`: the long run of issue 7, not part of CI.
//
// A real PostgreSQL and pooler (TLS on, md5 logins, transaction mode) under a mixed load for the
// given time: connection churn (half of it over TLS), steady clients, queries cancelled through
// the pooler, and a configuration reload (SIGHUP) every 10 s. The pooler's RSS and open file
// descriptors are sampled with the load paused, once after the warm-up (a tenth of the run, at
// least 20 s) and once at the end; they must not grow by more than 5% (a fall is no leak: the
// janitor's malloc_trim makes RSS swing a few percent either way). Every error a client sees is
// counted by SQLSTATE: the cancels' 57014 is provoked, anything else fails the run. At the end the
// pooler's whole log is searched for the password and its md5 hash.
//
// Exit code 0 when all of that holds; the figures go to docs/reliability.md.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import { startCluster } from '../test/support/pg-cluster.js';
import { startPooler } from '../test/support/pooler.js';
import { sendCancelRequest } from '../test/support/raw-client.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}

const MINUTES = Number(arg('--minutes') ?? 30);
const DURATION_MS = MINUTES * 60_000;
const WARMUP_MS = Math.max(20_000, DURATION_MS / 10);
const CHURN = 8;
const STEADY = 8;
const RELOAD_EVERY_MS = 10_000;
const CANCEL_EVERY_MS = 200;
const USER = 'soak_user';
const PASSWORD = `soak-${Date.now().toString(36)}-Pw`;
/** The SQLSTATE the soak provokes itself (a cancelled query). */
const PROVOKED = new Set(['57014']);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m?.[1] === undefined ? -1 : Number(m[1]) / 1024;
}

const fds = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length;

async function main(): Promise<number> {
  const cluster = await startCluster({ name: 'soak', ssl: true });
  await cluster.query(`SET password_encryption = 'md5'; CREATE ROLE ${USER} LOGIN PASSWORD '${PASSWORD}'`);
  const pki = cluster.pki!;
  const ini = (poolSize: number) => ({
    pgbouncer: {
      auth_type: 'md5',
      pool_mode: 'transaction',
      default_pool_size: String(poolSize),
      max_client_conn: '1000',
      client_tls_sslmode: 'allow',
      client_tls_key_file: pki.server.key,
      client_tls_cert_file: pki.server.chain,
      log_connections: '0',
      log_disconnections: '0',
    },
    databases: { p0: `host=127.0.0.1 port=${cluster.port} dbname=p0` },
  });
  const p = await startPooler(ini(8), { userlist: { [USER]: PASSWORD } });
  const config = (tls: boolean): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: p.port,
    user: USER,
    password: PASSWORD,
    database: 'p0',
    ssl: tls ? { rejectUnauthorized: false } : false,
    connectionTimeoutMillis: 10_000,
    query_timeout: 20_000,
  });

  const errors = new Map<string, number>();
  const firstOf = new Map<string, string>();
  const note = (e: unknown) => {
    const err = e as Error & { code?: string };
    const code = err.code ?? 'no-sqlstate';
    errors.set(code, (errors.get(code) ?? 0) + 1);
    if (!firstOf.has(code)) firstOf.set(code, err.message);
  };
  const counts = { connections: 0, queries: 0, cancels: 0, reloads: 0 };
  let paused = false;
  let stop = false;
  const idle = async () => {
    while (paused && !stop) await sleep(50);
  };

  const churn = async (i: number) => {
    for (let n = 0; !stop; n++) {
      await idle();
      const c = new pg.Client(config((i + n) % 2 === 0));
      c.on('error', note);
      try {
        await c.connect();
        counts.connections++;
        for (let q = 0; q < 1 + (n % 5); q++) {
          await c.query('SELECT $1::int AS n', [q]);
          counts.queries++;
        }
      } catch (e) {
        note(e);
      } finally {
        await c.end().catch(() => undefined);
      }
    }
  };

  const steady = async (i: number) => {
    const c = new pg.Client(config(i % 2 === 0));
    c.on('error', note);
    await c.connect();
    while (!stop) {
      await idle();
      try {
        await c.query("SELECT count(*) FROM generate_series(1, 100), pg_sleep(0.002) WHERE $1 = 'x'", ['x']);
        counts.queries++;
      } catch (e) {
        note(e);
      }
    }
    await c.end().catch(() => undefined);
  };

  const cancels = async () => {
    while (!stop) {
      await idle();
      const c = new pg.Client(config(counts.cancels % 2 === 0));
      c.on('error', note);
      try {
        await c.connect();
        const key = c as unknown as { processID: number; secretKey: number };
        const running = c.query('SELECT pg_sleep(5)').then(() => new Error('a cancelled query finished'), (e: unknown) => e);
        await sleep(50);
        const secret = Buffer.alloc(4);
        secret.writeInt32BE(key.secretKey);
        await sendCancelRequest(p.port, key.processID, secret);
        note(await running);
        counts.cancels++;
      } catch (e) {
        note(e);
      } finally {
        await c.end().catch(() => undefined);
      }
      await sleep(CANCEL_EVERY_MS);
    }
  };

  const reloads = async () => {
    let size = 8;
    while (!stop) {
      await sleep(RELOAD_EVERY_MS);
      if (stop) break;
      // Alternate the pool size so that each reload changes something.
      size = size === 8 ? 6 : 8;
      await p.writeIni(ini(size));
      p.reload();
      counts.reloads++;
    }
  };

  /** RSS and fds with the load paused and settled: 12 s, so that the janitor's malloc_trim (at
   * most every 10 s, after 1 000 closed connections) has run with the load stopped and both
   * samples are taken after a trim, not at a random point of its swing. */
  const sample = async () => {
    paused = true;
    await sleep(12_000);
    const s = { rss: rssMb(p.pid), fds: fds(p.pid) };
    paused = false;
    return s;
  };

  const t0 = Date.now();
  console.log(`soak: ${MINUTES} min (warm-up ${(WARMUP_MS / 1000).toFixed(0)} s), pooler pid ${p.pid} on ${p.port}, PostgreSQL ${cluster.version} on ${cluster.port}`);
  const workers = [
    ...Array.from({ length: CHURN }, (_, i) => churn(i)),
    ...Array.from({ length: STEADY }, (_, i) => steady(i)),
    cancels(),
    reloads(),
  ];
  await sleep(WARMUP_MS);
  const warm = await sample();
  console.log(`soak: after warm-up: RSS ${warm.rss.toFixed(1)} MB, ${warm.fds} fds`);
  while (Date.now() - t0 < DURATION_MS) {
    await sleep(Math.min(60_000, DURATION_MS - (Date.now() - t0)));
    const e = [...errors].map(([k, v]) => `${k}×${v}`).join(' ') || 'none';
    console.log(`soak: ${((Date.now() - t0) / 60_000).toFixed(1)} min: RSS ${rssMb(p.pid).toFixed(1)} MB, ${fds(p.pid)} fds, ${counts.connections} connections, ${counts.queries} queries, ${counts.cancels} cancels, ${counts.reloads} reloads; errors ${e}`);
  }
  const end = await sample();
  stop = true;
  await Promise.all(workers);

  const rssDrift = (end.rss - warm.rss) / warm.rss;
  const fdDrift = (end.fds - warm.fds) / warm.fds;
  const unexpected = [...errors].filter(([code]) => !PROVOKED.has(code));
  const logs = p.logs();
  const md5 = `md5${createHash('md5').update(PASSWORD + USER).digest('hex')}`;
  const leaks = logs.filter((l) => l.includes(PASSWORD) || l.includes(md5.slice(3)));
  console.log(`soak: end: RSS ${end.rss.toFixed(1)} MB (${(rssDrift * 100).toFixed(1)}% from warm-up), ${end.fds} fds (${(fdDrift * 100).toFixed(1)}%)`);
  console.log(`soak: ${counts.connections} connections (half TLS), ${counts.queries} queries, ${counts.cancels} cancels, ${counts.reloads} reloads in ${((Date.now() - t0) / 60_000).toFixed(1)} min`);
  console.log(`soak: errors: ${[...errors].map(([k, v]) => `${k}×${v}${PROVOKED.has(k) ? ' (provoked)' : ''}`).join(', ') || 'none'}`);
  for (const [code] of unexpected) console.log(`soak: unexpected ${code}: ${firstOf.get(code)}`);
  console.log(`soak: ${logs.length} pooler log lines searched for the password and its md5 hash: ${leaks.length} found`);

  const status = await p.stop('SIGTERM', 10_000);
  await cluster.destroy();
  const ok = rssDrift <= 0.05 && fdDrift <= 0.05 && unexpected.length === 0 && leaks.length === 0 && status.code === 0;
  console.log(`soak: ${ok ? 'PASS' : 'FAIL'} (pooler exit ${status.code ?? status.signal})`);
  return ok ? 0 : 1;
}

process.exit(await main());
