// Faults and load of issue 7, against a real PostgreSQL and pooler (figures in docs/reliability.md):
//
// - PostgreSQL SIGKILLed and started again under a transaction-mode load: a query in flight fails
//   with 08006/57P01 (the others wait for the login retry, as in PgBouncer), none hangs, and
//   throughput is back within server_login_retry + 2 s of PostgreSQL accepting connections again.
// - PostgreSQL stalled by the fault proxy: query_timeout ends the running query and the wait of
//   the client behind it, and nobody hangs.
// - A logfile on a full disk (/dev/full): the pooler keeps serving, says so once, and still exits
//   on SIGTERM.
// - Idle TLS clients (1 000 here, PGPOOL_IDLE_TLS=10000 for the figure) plus a 32-client
//   pgbench: no error, no idle client dropped, RSS per idle client printed.
// - Data integrity: a COPY in and out, and rows of random size (0 B to 5 MB, bytea and multi-byte
//   text), through the pooler and directly, compared by hashes computed here. 64 MB and 2 000 rows
//   in CI; PGPOOL_INTEGRITY_FULL=1 runs the 1 GB and 100 000 rows.
//
// The server connection cut in the middle of a DataRow stream is failures.test.ts's "a server
// socket cut in the middle of a large result"; server_connect_timeout against a server that never
// answers is timeouts.test.ts's.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { Rng } from '../../bench/fuzz.js';
import { cstr, msg, sslRequest, startupPacket } from '../support/bytes.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { connectClient, type PgError } from '../support/pg-client.js';
import { SUPERUSER } from '../support/pg-cluster.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { connectSocket, RawConn } from '../support/raw-client.js';
import { pgbench } from '../support/run-cmd.js';
import { useSetup } from '../support/suite.js';
import { sleep, within } from '../support/wait.js';

const USER = 'h_user';
const FULL = process.env.PGPOOL_INTEGRITY_FULL === '1';
const IDLE_TLS = Number(process.env.PGPOOL_IDLE_TLS ?? 1_000);

const setup = useSetup({
  cluster: { name: 'hardening', ssl: true },
  roles: [USER],
  prepare: async (cluster) => {
    await cluster.query(`CREATE TABLE integ_rows (id int PRIMARY KEY, b bytea, t text);
                         CREATE TABLE integ_copy (id int, t text);
                         GRANT ALL ON integ_rows, integ_copy TO ${USER}`, 'p1');
  },
  dumpLogs: { clusterLines: 60 },
});
const c = setup.c;

const poolers: Pooler[] = [];
after(async () => {
  await Promise.all(poolers.map((p) => p.stop('SIGTERM', 3_000)));
});

async function pooler(ini: IniSections): Promise<Pooler> {
  const p = await startPooler(ini);
  poolers.push(p);
  return p;
}

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m?.[1] === undefined ? -1 : Number(m[1]);
}

function client(p: Pooler, db = 'p0', user = USER): Promise<pg.Client> {
  return connectClient({ connectionString: p.url(user, '', db), connectionTimeoutMillis: 10_000, query_timeout: 15_000 });
}

// ------------------------------------------------------------------------------------------------

describe('PostgreSQL SIGKILLed under load', () => {
  it('in-flight queries fail with 08006/57P01 or wait for the retry, none hangs, throughput is back within server_login_retry + 2 s', async () => {
    const LOGIN_RETRY_S = 1;
    const CLIENTS = 16;
    const p = await pooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '8', server_login_retry: String(LOGIN_RETRY_S), query_wait_timeout: '15' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    });
    // A pgbench-like loop of short transactions per client. pgbench itself aborts a client at its
    // first error and so cannot show the recovery; these clients note the error and go on (on a
    // new connection when the pooler closed theirs).
    const done: number[] = [];
    const errors: { code: string; at: number; message: string }[] = [];
    let hangs = 0;
    let stop = false;
    const worker = async (): Promise<void> => {
      let cl: pg.Client | null = null;
      while (!stop) {
        try {
          cl ??= await client(p);
          await cl.query('SELECT 1');
          done.push(Date.now());
        } catch (e) {
          const err = e as PgError;
          if (/timeout/i.test(err.message) && err.code === undefined) hangs++;
          errors.push({ code: err.code ?? 'none', at: Date.now(), message: err.message });
          await cl?.end().catch(() => undefined);
          cl = null;
          await sleep(20);
        }
      }
      await cl?.end().catch(() => undefined);
    };
    const workers = Array.from({ length: CLIENTS }, worker);
    try {
      await sleep(2_000);
      const rate = (from: number, to: number) => done.filter((t) => t >= from && t < to).length / ((to - from) / 1000);
      const tKill = Date.now();
      const baseline = rate(tKill - 1_500, tKill);
      await c().kill();
      await sleep(300);
      await c().start();
      const tBack = Date.now();
      // Recovered: a 250 ms window at half the baseline rate or better.
      let recoveredAt: number | null = null;
      const deadline = tBack + (LOGIN_RETRY_S + 2) * 1000 + 3_000;
      while (recoveredAt === null && Date.now() < deadline) {
        await sleep(100);
        for (let t = tBack; t + 250 <= Date.now(); t += 50) {
          if (rate(t, t + 250) >= baseline / 2) {
            recoveredAt = t + 250;
            break;
          }
        }
      }
      stop = true;
      await within(20_000, 'the load clients to stop', Promise.all(workers));
      const inFlight = errors.filter((e) => e.at >= tKill && e.at < tKill + 1_000);
      const codes = [...new Set(errors.map((e) => e.code))].sort();
      const ms = recoveredAt === null ? null : recoveredAt - tBack;
      console.log(
        `hardening: SIGKILL under ${CLIENTS} clients: baseline ${baseline.toFixed(0)} tx/s; ${errors.length} errors (codes ${codes.join(', ')}); ` +
          `throughput back ${ms ?? 'never'} ms after PostgreSQL accepted connections again (server_login_retry ${LOGIN_RETRY_S} s)`,
      );
      assert.equal(hangs, 0, 'queries that never got an answer');
      // The backends go when they see the postmaster gone, mostly between queries: the servers die,
      // and the clients whose next server cannot log in wait for the retry (no error at all is fine).
      assert.ok(p.logs().some((l) => /server conn crashed|server login failed/.test(l)), 'the pooler never saw PostgreSQL go');
      for (const e of inFlight) assert.ok(['08006', '57P01'].includes(e.code), `an in-flight query failed with ${e.code}: ${e.message}`);
      assert.ok(ms !== null && ms <= (LOGIN_RETRY_S + 2) * 1000, `throughput not back within server_login_retry + 2 s (${ms} ms)`);
    } finally {
      stop = true;
      await Promise.all(workers);
      await p.stop('SIGTERM', 3_000);
    }
  });
});

describe('PostgreSQL stalled by the fault proxy', () => {
  let proxy: FaultProxy | undefined;
  after(() => proxy?.close());

  it('query_timeout ends the stalled query and the wait of the client behind it (as PgBouncer counts it); nobody hangs', async () => {
    proxy = await startFaultProxy({ host: c().host, port: c().port });
    const p = await pooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', query_timeout: '1', server_connect_timeout: '2', query_wait_timeout: '10', server_login_retry: '1' },
      databases: { stall: `host=127.0.0.1 port=${proxy.port} dbname=p0 pool_size=1` },
    });
    const a = await client(p, 'stall');
    const b = await client(p, 'stall');
    try {
      assert.deepEqual((await a.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      proxy.stall();
      const t0 = Date.now();
      const running = a.query('SELECT 1 AS x').then(() => null, (e: PgError) => e);
      await sleep(100);
      // Behind it in the one-server pool; then the new server's login goes through the stall too.
      const waiting = b.query('SELECT 2 AS x').then(() => null, (e: PgError) => e);
      const ea = await within(5_000, 'the stalled query', running);
      const msA = Date.now() - t0;
      const eb = await within(10_000, 'the client waiting behind the stalled one', waiting);
      const msB = Date.now() - t0;
      console.log(`hardening: stalled PostgreSQL: query_timeout after ${msA} ms (${ea?.message}); the waiting client failed after ${msB} ms (${eb?.message})`);
      assert.match(ea?.message ?? 'no error', /query_timeout/);
      assert.ok(eb instanceof Error, 'the waiting client got an answer from a stalled server');
      // query_timeout counts a client's wait for a server too (PgBouncer's pool_client_maint).
      assert.match(eb.message, /query_timeout/);
    } finally {
      proxy.unstall();
      await a.end().catch(() => undefined);
      await b.end().catch(() => undefined);
    }
    // Unstalled, the pool serves again once server_login_retry (1 s) after the failed login is over.
    await sleep(1_300);
    const d = await client(p, 'stall');
    try {
      assert.deepEqual((await d.query('SELECT 3 AS x')).rows, [{ x: 3 }]);
    } finally {
      await d.end();
    }
  });
});

describe('an unwritable logfile', () => {
  it('the pooler on a full disk (logfile /dev/full) keeps serving and says so once', async () => {
    const p = await pooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', logfile: '/dev/full', verbose: '1' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    });
    for (let i = 0; i < 50; i++) {
      const cl = await client(p);
      assert.deepEqual((await cl.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      await cl.end();
    }
    await sleep(300);
    const said = p.logs().filter((l) => /logfile/i.test(l));
    console.log(`hardening: logfile /dev/full: ${said.length} line(s) on stderr: ${said.join(' | ')}`);
    assert.equal(said.length, 1, `expected one line about the logfile, got:\n${p.logs().join('\n')}`);
    const exited = await Promise.race([p.exited.then(() => true), sleep(50).then(() => false)]);
    assert.equal(exited, false, 'the pooler died');
    // And it still goes down on SIGTERM (a flush of the lines it could not write once hung it).
    const status = await p.stop('SIGTERM', 5_000);
    assert.deepEqual(status, { code: 0, signal: null }, 'the pooler did not exit on SIGTERM within 5 s');
  });
});

// ------------------------------------------------------------------------------------------------

describe('idle TLS clients under a pgbench load', () => {
  it(`${IDLE_TLS} idle TLS clients and a 32-client pgbench: no error, no idle client dropped; RSS per idle client`, async () => {
    const p = await pooler({
      pgbouncer: {
        auth_type: 'trust',
        pool_mode: 'transaction',
        default_pool_size: '8',
        max_client_conn: String(IDLE_TLS + 200),
        listen_backlog: '4096',
        client_tls_sslmode: 'require',
        client_tls_key_file: c().pki!.server.key,
        client_tls_cert_file: c().pki!.server.chain,
      },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    });
    const init = await pgbench(['-i', '-s', '1', '-q', c().superuserUrl('p0')]);
    assert.equal(init.code, 0, init.stderr);
    // A first client logs in so that the pool and TLS context are warm before the baseline.
    const warm = await idleTls(p.port);
    const before = rssKb(p.pid);
    const idle: RawConn[] = [warm];
    const t0 = Date.now();
    try {
      for (let i = 1; i < IDLE_TLS; i += 100) {
        idle.push(...(await Promise.all(Array.from({ length: Math.min(100, IDLE_TLS - i) }, () => idleTls(p.port)))));
      }
      const loginMs = Date.now() - t0;
      const withIdle = rssKb(p.pid);
      const url = `postgresql://${SUPERUSER}@127.0.0.1:${p.port}/p0?sslmode=require`;
      const bench = await pgbench(['-n', '-S', '-c', '32', '-j', '2', '-T', '5', url], { timeoutMs: 60_000 });
      const tps = /^tps = ([\d.]+)/m.exec(bench.stdout)?.[1];
      const dropped = idle.filter((r) => r.ended).length;
      const perClientKb = (withIdle - before) / IDLE_TLS;
      console.log(
        `hardening: ${IDLE_TLS} idle TLS clients logged in in ${loginMs} ms; pooler RSS ${(before / 1024).toFixed(0)} → ${(withIdle / 1024).toFixed(0)} MB ` +
          `(${perClientKb.toFixed(1)} kB per idle client); pgbench -S -c 32 over TLS meanwhile: ${tps} tps, exit ${bench.code}; ${dropped} idle clients dropped`,
      );
      assert.equal(bench.code, 0, bench.stderr.slice(-500));
      assert.match(bench.stdout, /number of failed transactions: 0 /);
      assert.equal(dropped, 0);
      // Still answering: a query on a few of the idle clients.
      for (const r of [idle[0]!, idle[idle.length >> 1]!, idle.at(-1)!]) assert.deepEqual(await r.query('SELECT 1'), ['1']);
    } finally {
      for (const r of idle) r.destroy();
    }
  });
});

/** A TLS client of `port` logged in (trust) and left idle. */
async function idleTls(port: number): Promise<RawConn> {
  const sock = await connectSocket({ host: '127.0.0.1', port });
  sock.write(sslRequest());
  const answer = await new Promise<Buffer>((resolve, reject) => {
    sock.once('data', resolve);
    sock.once('error', reject);
  });
  assert.equal(answer[0], 0x53, "expected 'S'");
  const secure = tls.connect({ socket: sock, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', reject);
  });
  const conn = new RawConn(secure, { timeoutMs: 30_000 });
  conn.send(startupPacket({ user: SUPERUSER, database: 'p0' }));
  await conn.until('Z');
  return conn;
}

// ------------------------------------------------------------------------------------------------

describe('data integrity through the pooler', () => {
  const COPY_BYTES = FULL ? 1024 ** 3 : 64 * 1024 ** 2;
  const ROWS = FULL ? 100_000 : 2_000;
  const SEED = Number(process.env.PGPOOL_FUZZ_SEED ?? (Date.now() >>> 0));

  /** Printable text with multi-byte characters (2, 3 and 4 bytes in UTF-8), no tab, newline or backslash. */
  const GLYPHS = ['a', 'Z', '7', ' ', 'é', 'ß', 'Ж', '€', '中', '文', '😀', '𝄞'];
  function text(r: Rng, bytes: number): string {
    let s = '';
    let n = 0;
    while (n < bytes) {
      const g = GLYPHS[r.int(GLYPHS.length)]!;
      s += g;
      n += Buffer.byteLength(g);
    }
    return s;
  }

  /** 0 B to 5 MB, mostly small: 90% under 1 kB, 9.9% under 64 kB, 0.1% up to 5 MB. */
  function size(r: Rng): number {
    const k = r.int(1000);
    if (k < 900) return r.int(1024);
    if (k < 999) return r.int(64 * 1024);
    return r.int(5 * 1024 * 1024 + 1);
  }

  it(`${COPY_BYTES / 1024 ** 2} MB through COPY in and out, byte for byte, through the pooler and directly`, async () => {
    const p = await pooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction' },
      databases: { p1: `host=127.0.0.1 port=${c().port} dbname=p1` },
    });
    const r = new Rng(SEED);
    // Lines of about 1 kB: an id and multi-byte text, in COPY's text format as PostgreSQL prints it.
    const sent = createHash('sha256');
    let bytes = 0;
    let id = 0;
    const t0 = Date.now();
    const { conn: inConn } = await RawConn.login(p.port, { user: USER, database: 'p1' }, { timeoutMs: 120_000 });
    try {
      inConn.send(msg('Q', cstr('COPY integ_copy FROM STDIN')));
      await inConn.until('G');
      while (bytes < COPY_BYTES) {
        let chunk = '';
        while (chunk.length < 256 * 1024) chunk += `${id++}\t${text(r, r.int(2048))}\n`;
        const buf = Buffer.from(chunk);
        sent.update(buf);
        bytes += buf.length;
        if (!inConn.send(msg('d', buf))) await new Promise((res) => inConn.sock.once('drain', res));
      }
      inConn.send(msg('c'));
      const done = await inConn.until('Z');
      assert.ok(!done.some((m) => m.type === 'E'), 'COPY FROM STDIN failed');
    } finally {
      inConn.destroy();
    }
    const inMs = Date.now() - t0;
    const expected = sent.digest('hex');
    const out = async (port: number, via: string) => {
      const t = Date.now();
      const { conn } = await RawConn.login(port, { user: USER, database: 'p1' }, { timeoutMs: 120_000 });
      try {
        const h = createHash('sha256');
        let n = 0;
        conn.onCopyData = (body) => {
          h.update(body);
          n += body.length;
        };
        // Ordered: COPY FROM puts a short row into room an earlier page still has (the free space
        // map), so the heap is not in the order the rows went in.
        conn.send(msg('Q', cstr('COPY (SELECT * FROM integ_copy ORDER BY id) TO STDOUT')));
        const seen = await conn.until('Z');
        assert.ok(!seen.some((m) => m.type === 'E'), `COPY TO STDOUT ${via} failed`);
        return { sha: h.digest('hex'), n, ms: Date.now() - t };
      } finally {
        conn.destroy();
      }
    };
    const viaPooler = await out(p.port, 'through the pooler');
    const direct = await out(c().port, 'directly');
    console.log(`hardening: COPY ${(bytes / 1024 ** 2).toFixed(0)} MB (${id} lines, seed ${SEED}): in through the pooler ${inMs} ms, out through the pooler ${viaPooler.ms} ms, directly ${direct.ms} ms`);
    assert.equal(direct.sha, expected, 'COPY TO STDOUT directly differs from what went in through the pooler');
    assert.equal(viaPooler.n, bytes);
    assert.equal(viaPooler.sha, expected, 'COPY TO STDOUT through the pooler differs from what was sent');
    await c().query('TRUNCATE integ_copy', 'p1');
  });

  it(`${ROWS} rows of random size (0 B to 5 MB; bytea and multi-byte text) read back identical through the pooler and directly`, async () => {
    const p = await pooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction' },
      databases: { p1: `host=127.0.0.1 port=${c().port} dbname=p1` },
    });
    const r = new Rng(SEED ^ 0x2545f491);
    const expected = createHash('sha256');
    let total = 0;
    const t0 = Date.now();
    const writer = await client(p, 'p1');
    try {
      const BATCH = 50;
      for (let first = 0; first < ROWS; first += BATCH) {
        const params: unknown[] = [];
        const values: string[] = [];
        for (let id = first; id < Math.min(ROWS, first + BATCH); id++) {
          const b = r.bytes(size(r));
          const t = text(r, size(r) >> 2);
          rowHash(expected, id, b, t);
          total += b.length + Buffer.byteLength(t);
          values.push(`($${params.length + 1}, $${params.length + 2}, $${params.length + 3})`);
          params.push(id, b, t);
        }
        await writer.query(`INSERT INTO integ_rows (id, b, t) VALUES ${values.join(', ')}`, params);
      }
    } finally {
      await writer.end();
    }
    const inMs = Date.now() - t0;
    const want = expected.digest('hex');
    const read = async (cl: pg.Client) => {
      const t = Date.now();
      const h = createHash('sha256');
      try {
        // By id ranges, so that no more than a few big rows are in memory at once.
        for (let first = 0; first < ROWS; first += 200) {
          const res = await cl.query<{ id: number; b: Buffer; t: string }>('SELECT id, b, t FROM integ_rows WHERE id >= $1 AND id < $2 ORDER BY id', [first, first + 200]);
          for (const row of res.rows) rowHash(h, row.id, row.b, row.t);
        }
      } finally {
        await cl.end();
      }
      return { sha: h.digest('hex'), ms: Date.now() - t };
    };
    const viaPooler = await read(await client(p, 'p1'));
    const direct = await read(await connectClient({ connectionString: `postgresql://${USER}@127.0.0.1:${c().port}/p1`, query_timeout: 60_000 }));
    console.log(`hardening: ${ROWS} rows, ${(total / 1024 ** 2).toFixed(0)} MB (seed ${SEED}): written through the pooler ${inMs} ms, read through the pooler ${viaPooler.ms} ms, directly ${direct.ms} ms`);
    assert.equal(viaPooler.sha, want, 'rows read through the pooler differ from what was written');
    assert.equal(direct.sha, want, 'rows read directly differ from what was written');
    await c().query('TRUNCATE integ_rows', 'p1');
  });
});

/** Feed one row into a hash, with lengths so that no two different rows hash the same way. */
function rowHash(h: ReturnType<typeof createHash>, id: number, b: Buffer, t: string): void {
  const tb = Buffer.from(t);
  const head = Buffer.alloc(12);
  head.writeInt32BE(id, 0);
  head.writeInt32BE(b.length, 4);
  head.writeInt32BE(tb.length, 8);
  h.update(head).update(b).update(tb);
}
