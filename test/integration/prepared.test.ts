// Named prepared statements through the real pooler (issue 6): real drivers in their prepared modes
// in transaction mode with a pool of 2 servers and 20 clients (postgres.js default mode,
// node-postgres named queries, pgbench -M prepared, psycopg 3 with prepare_threshold=0, pgjdbc
// with prepareThreshold=1), the LRU bound on the server side (max_prepared_statements), the exact
// replies a client gets (ParseComplete, CloseComplete, ParameterDescription, RowDescription and
// errors at the right point of a pipeline, checked with hand-built protocol messages), SQL
// DEALLOCATE / DISCARD ALL / PREPARE / EXECUTE, DDL that changes a result type, and session mode.
//
// What a client sees is always compared with what PostgreSQL itself would answer the same client
// on a connection of its own. docs/prepared-statements.md describes the design being tested.
//
// Databases of the main pooler: p0 (transaction mode, pool_size 2), one (p0 through a pool of ONE
// server, where "the statement is on this server" is certain), sess (p0 in session mode), p1
// (pgbench tables). A second pooler runs with max_prepared_statements = 5.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import postgres from 'postgres';
import { cstr, int16, int32, msg } from '../support/bytes.js';
import { connectClient, type PgError } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { errorFields, firstErrorFields, RawConn, rows, types, type BackendMessage } from '../support/raw-client.js';
import { psycopgPython } from '../support/python.js';
import { pgbench, runCommand } from '../support/run-cmd.js';
import { dumpLogsOnFailure, required } from '../support/suite.js';

const USER = USERS.trust.name;
const PASSWORD = 'prep-pass';
const CLIENTS = 20;
const POOL_SIZE = 2;
const STATEMENTS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 20_000;

/** Source files next to the compiled test (the .py and .java are not compiled by tsc). */
const SUPPORT_SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/support');

// ------------------------------------------------------------------------------------------------
// Raw protocol client: hand-built frontend messages out, backend messages in

/** Connect and log in (trust): returns once the first ReadyForQuery arrived. */
async function rawLogin(port: number, database: string): Promise<RawConn> {
  return (await RawConn.login(port, { user: USER, database }, { timeoutMs: QUERY_TIMEOUT_MS })).conn;
}

// Frontend messages.
const S = msg('S');
function Q(sql: string): Buffer {
  return msg('Q', cstr(sql));
}
function P(name: string, sql: string, oids: number[] = []): Buffer {
  return msg('P', cstr(name), cstr(sql), int16(oids.length), ...oids.map(int32));
}
function B(stmt: string, params: (string | null)[] = [], portal = ''): Buffer {
  const values = params.flatMap((p) => (p === null ? [int32(-1)] : [int32(Buffer.byteLength(p)), Buffer.from(p)]));
  return msg('B', cstr(portal), cstr(stmt), int16(0), int16(params.length), ...values, int16(0));
}
function D(kind: 'S' | 'P', name: string): Buffer {
  return msg('D', kind, cstr(name));
}
function E(portal = ''): Buffer {
  return msg('E', cstr(portal), int32(0));
}
function C(kind: 'S' | 'P', name: string): Buffer {
  return msg('C', kind, cstr(name));
}

// Backend message decoding.

/** The first ErrorResponse's SQLSTATE and message, or null. */
function firstError(msgs: BackendMessage[]): { code: string; message: string } | null {
  const f = firstErrorFields(msgs);
  return f === null ? null : { code: f.C ?? '', message: f.M ?? '' };
}

function paramOids(m: BackendMessage): number[] {
  const n = m.body.readInt16BE(0);
  return Array.from({ length: n }, (_, i) => m.body.readUInt32BE(2 + 4 * i));
}

function rowFields(m: BackendMessage): { name: string; oid: number }[] {
  const n = m.body.readInt16BE(0);
  const out: { name: string; oid: number }[] = [];
  let pos = 2;
  for (let i = 0; i < n; i++) {
    const z = m.body.indexOf(0, pos);
    const name = m.body.toString('utf8', pos, z);
    pos = z + 1;
    const oid = m.body.readUInt32BE(pos + 6);
    pos += 18;
    out.push({ name, oid });
  }
  return out;
}

/**
 * PgBouncer's answer to a message naming a statement the client does not hold (a Bind or Describe
 * of a name it never prepared or already dropped), or to a Parse of a name it holds: FATAL 08P01
 * with `message`, then the pooler closes the client.
 */
async function refused(conn: RawConn, message: string, ...msgs: Buffer[]): Promise<void> {
  conn.send(Buffer.concat(msgs));
  const e = await conn.errorResponse();
  assert.deepEqual([e?.S, e?.C, e?.M], ['FATAL', '08P01', message]);
  assert.equal(await conn.closesWithin(5_000), true, 'the pooler closes the client');
}
const NOT_PREPARED = 'prepared statement did not exist';

/** Message types with the error code in brackets, for readable assertion messages. */
function describeReplies(msgs: BackendMessage[]): string {
  return msgs.map((m) => (m.type === 'E' ? `E[${errorFields(m).C}: ${errorFields(m).M}]` : m.type)).join(' ');
}

function assertTypes(msgs: BackendMessage[], want: string, what: string): void {
  assert.equal(types(msgs), want, `${what}: got ${describeReplies(msgs)}`);
}

/** Unique texts per test, so a statement is never already on a server by accident. */
let textSeq = 0;
function uniq(label: string): string {
  return `${label}-${process.pid}-${++textSeq}`;
}

// ------------------------------------------------------------------------------------------------

function pgClient(port: number, database: string): Promise<pg.Client> {
  return connectClient({
    host: '127.0.0.1', port, user: USER, password: PASSWORD, database,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS, query_timeout: QUERY_TIMEOUT_MS,
  });
}

/** The pgjdbc jar from the local Maven repository, and working java/javac. */
async function pgjdbc(): Promise<{ jar: string } | { skip: string }> {
  const dir = path.join(os.homedir(), '.m2/repository/org/postgresql/postgresql/42.7.13');
  const jar = fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => f.endsWith('.jar')) : undefined;
  if (jar === undefined) return { skip: `no pgjdbc jar in ${dir}` };
  for (const tool of ['java', 'javac']) {
    const r = await runCommand(tool, ['-version'], { timeoutMs: 20_000 }).catch(() => null);
    if (r?.code !== 0) return { skip: `${tool} is not available` };
  }
  return { jar: path.join(dir, jar) };
}

// ------------------------------------------------------------------------------------------------

describe('prepared statements', () => {
  let cluster: Cluster | undefined;
  let pooler: Pooler | undefined;
  /** max_prepared_statements = 5. */
  let small: Pooler | undefined;
  let tmp = '';
  const c = required(() => cluster, 'cluster');
  const port = (): number => required(() => pooler, 'pooler')().port;
  const raws: RawConn[] = [];
  const raw = async (db: string): Promise<RawConn> => {
    const r = await rawLogin(port(), db);
    raws.push(r);
    return r;
  };

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-prepared-'));
    cluster = await startCluster({ name: 'prepared' });
    await cluster.query(`CREATE TABLE late_pair (a int); GRANT ALL ON late_pair TO PUBLIC`);
    const init = await pgbench(['-i', '-q', '-s', '1', `postgresql://${USER}@127.0.0.1:${cluster.port}/p1`]);
    assert.equal(init.code, 0, init.stderr);
    const target = `host=127.0.0.1 port=${cluster.port}`;
    const base = {
      auth_type: 'trust',
      pool_mode: 'transaction',
      default_pool_size: String(POOL_SIZE),
      max_client_conn: '300',
      admin_users: USER,
    };
    pooler = await startPooler(
      {
        pgbouncer: base,
        databases: {
          p0: `${target} dbname=p0`,
          one: `${target} dbname=p0 pool_size=1`,
          sess: `${target} dbname=p0 pool_mode=session pool_size=4`,
          p1: `${target} dbname=p1`,
        },
      },
      { userlist: { [USER]: PASSWORD } },
    );
    small = await startPooler(
      { pgbouncer: { ...base, max_prepared_statements: '5' }, databases: { p0: `${target} dbname=p0` } },
      { userlist: { [USER]: PASSWORD } },
    );
  });
  dumpLogsOnFailure({ clusters: () => [cluster], poolers: () => [pooler, small], poolerLines: 150, clusterLines: 80 });
  afterEach(() => {
    for (const r of raws.splice(0)) r.close();
  });
  after(async () => {
    await Promise.all([pooler?.stop(), small?.stop()]);
    await cluster?.destroy();
    if (tmp !== '') await fsp.rm(tmp, { recursive: true, force: true });
  });

  // ----------------------------------------------------------------------------------------------
  describe(`drivers: ${STATEMENTS} statements from ${CLIENTS} clients over a pool of ${POOL_SIZE}`, () => {
    it('postgres.js in its default mode (prepare: true), pipelining', async () => {
      const sql = postgres({
        host: '127.0.0.1', port: port(), user: USER, password: PASSWORD, database: 'p0',
        max: CLIENTS, connect_timeout: 10, idle_timeout: 5, onnotice: () => undefined,
      });
      try {
        const DISTINCT = 25;
        const results = await Promise.all(Array.from({ length: STATEMENTS }, async (_, i) => {
          const k = i % DISTINCT;
          if (i % 500 === 499) {
            // Now and then a transaction: two prepared statements on one server.
            return sql.begin(async (tx) => {
              const [a] = await tx.unsafe(`SELECT $1::int + ${k} AS v, $2::text AS t`, [i, `js-${i}`], { prepare: true });
              const [b] = await tx`SELECT ${i}::int * 2 AS d`;
              assert.equal(b?.d, i * 2);
              return { i, k, row: a };
            });
          }
          const [row] = await sql.unsafe(`SELECT $1::int + ${k} AS v, $2::text AS t`, [i, `js-${i}`], { prepare: true });
          return { i, k, row };
        }));
        for (const { i, k, row } of results) assert.deepEqual({ ...row }, { v: i + k, t: `js-${i}` });
        const [renamed] = await sql`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'PGPOOL%'`;
        assert.ok((renamed?.n as number) > 0, 'the statements reached the server under the pooler\'s names');
      } finally {
        await sql.end({ timeout: 5 });
      }
    });

    it('node-postgres named queries: the same names with different texts in every client', async () => {
      const clients = await Promise.all(Array.from({ length: CLIENTS }, () => pgClient(port(), 'p0')));
      try {
        const per = STATEMENTS / CLIENTS;
        await Promise.all(clients.map(async (cl, owner) => {
          for (let i = 0; i < per; i++) {
            const k = i % 10;
            // Every client has q0..q9, each with its own owner number in the text.
            const r = await cl.query<{ v: number; owner: number }>({
              name: `q${k}`, text: `SELECT $1::int + ${k} AS v, ${owner} AS owner`, values: [i],
            });
            assert.deepEqual(r.rows[0], { v: i + k, owner }, `client ${owner} statement q${k}`);
          }
        }));
      } finally {
        await Promise.all(clients.map((cl) => cl.end().catch(() => undefined)));
      }
    });

    it('pgbench -M prepared -S, then TPC-B -M prepared', async () => {
      const url = `postgresql://${USER}@127.0.0.1:${port()}/p1`;
      // One thread per client (-j = -c): pgbench prepares each command with a synchronous
      // PQprepare the first time a client runs it, which blocks the whole thread while that client
      // waits for a server. With several clients a thread, a client waiting to prepare BEGIN
      // would block the thread's other clients, which hold both servers inside their transactions:
      // a deadlock of pgbench's own making, through any transaction pooler.
      const select = await pgbench(['-n', '-M', 'prepared', '-S', '-c', String(CLIENTS), '-j', String(CLIENTS), '-t', String(STATEMENTS / CLIENTS), url],
        { timeoutMs: 60_000 });
      assert.equal(select.code, 0, `${select.stdout}\n${select.stderr}`);
      assert.match(select.stdout, new RegExp(`number of transactions actually processed: ${STATEMENTS}/${STATEMENTS}`), select.stdout);
      assert.doesNotMatch(select.stdout, /number of failed transactions: [1-9]/, select.stdout);
      // TPC-B: 7 statements a transaction (BEGIN, 3 UPDATE, SELECT, INSERT, END).
      const tx = Math.ceil(STATEMENTS / 7 / CLIENTS);
      const tpcb = await pgbench(['-n', '-M', 'prepared', '-c', String(CLIENTS), '-j', String(CLIENTS), '-t', String(tx), url], { timeoutMs: 60_000 });
      assert.equal(tpcb.code, 0, `${tpcb.stdout}\n${tpcb.stderr}`);
      assert.match(tpcb.stdout, new RegExp(`processed: ${tx * CLIENTS}/${tx * CLIENTS}`), tpcb.stdout);
      assert.doesNotMatch(tpcb.stdout, /number of failed transactions: [1-9]/, tpcb.stdout);
      // The balance moved exactly as the history says: every UPDATE and INSERT ran once.
      const sums = await c().query<{ h: string; a: string }>(
        'SELECT (SELECT sum(delta) FROM pgbench_history)::text AS h, (SELECT sum(abalance) FROM pgbench_accounts)::text AS a', 'p1');
      assert.equal(sums.rows[0]?.h, sums.rows[0]?.a);
    });

    /** Run test/support/psycopg_client.py (the test is skipped when psycopg cannot be had). */
    const psycopgRun = async (t: { skip(msg: string): void }, preparedMax: number): Promise<void> => {
      const py = await psycopgPython();
      if ('skip' in py) {
        console.log(`# skipped psycopg: ${py.skip}`);
        t.skip(py.skip);
        return;
      }
      const dsn = `host=127.0.0.1 port=${port()} user=${USER} password=${PASSWORD} dbname=p0 connect_timeout=10`;
      const r = await runCommand(py.python, [path.join(SUPPORT_SRC, 'psycopg_client.py'), dsn, String(CLIENTS), String(STATEMENTS), '12', String(preparedMax)],
        { timeoutMs: 90_000, env: { PYTHONPATH: undefined, PYTHONHOME: undefined } });
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: number; errors: string[]; pooler_statements: number };
      assert.deepEqual(out.errors?.slice(0, 5), [], r.stderr);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.equal(out.ok, STATEMENTS);
      assert.ok(out.pooler_statements > 0, 'psycopg\'s statements reached the server under the pooler\'s names');
    };

    it('psycopg 3 with prepare_threshold=0', async (t) => {
      await psycopgRun(t, 0);
    });

    it('psycopg 3 with prepare_threshold=0 and a small prepared_max (it evicts with SQL DEALLOCATE via PQexecParams)', async (t) => {
      await psycopgRun(t, 6);
    });

    it('psycopg 3: a rollback() (psycopg then sends DEALLOCATE ALL via PQexecParams) leaves every client working', async (t) => {
      const py = await psycopgPython();
      if ('skip' in py) {
        t.skip(py.skip);
        return;
      }
      // Two connections to the one-server pool: they share its statements.
      const dsn = `host=127.0.0.1 port=${port()} user=${USER} password=${PASSWORD} dbname=one connect_timeout=10`;
      const r = await runCommand(py.python, [path.join(SUPPORT_SRC, 'psycopg_client.py'), 'rollback', dsn],
        { timeoutMs: 30_000, env: { PYTHONPATH: undefined, PYTHONHOME: undefined } });
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { results?: number[]; errors?: string[] };
      assert.deepEqual(out.errors, [], r.stderr);
      assert.deepEqual(out.results, [101, 201, 102, 202]);
      assert.equal(r.code, 0, r.stderr);
    });

    it('pgjdbc with prepareThreshold=1 (and its own Close on cache eviction)', async (t) => {
      const j = await pgjdbc();
      if ('skip' in j) {
        console.log(`# skipped pgjdbc: ${j.skip}`);
        t.skip(j.skip);
        return;
      }
      const classes = path.join(tmp, 'jdbc');
      await fsp.mkdir(classes, { recursive: true });
      const javac = await runCommand('javac', ['-cp', j.jar, '-d', classes, path.join(SUPPORT_SRC, 'jdbc', 'PreparedLoad.java')], { timeoutMs: 60_000 });
      assert.equal(javac.code, 0, javac.stderr);
      const url = `jdbc:postgresql://127.0.0.1:${port()}/p0`;
      const r = await runCommand('java', ['-cp', `${classes}${path.delimiter}${j.jar}`, 'PreparedLoad', url, USER, PASSWORD, String(CLIENTS), String(STATEMENTS), '12'],
        { timeoutMs: 90_000 });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      const m = /ok=(\d+) errors=(\d+) pooler_statements=(-?\d+)/.exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.equal(Number(m[1]), STATEMENTS, r.stdout);
      assert.equal(Number(m[2]), 0, r.stdout);
      assert.ok(Number(m[3]) > 0, 'pgjdbc\'s statements reached the server under the pooler\'s names');
    });
  });

  // ----------------------------------------------------------------------------------------------
  describe('each client sees only its own statements', () => {
    it('two clients preparing the same name with different texts on one server get their own results', async () => {
      const a = await raw('one');
      const b = await raw('one');
      for (let round = 0; round < 3; round++) {
        if (round === 0) {
          assertTypes(await a.exchange(P('same', `SELECT 'from-a' AS who`), S), '1Z', 'A Parse');
          assertTypes(await b.exchange(P('same', `SELECT 'from-b' AS who`), S), '1Z', 'B Parse');
        }
        const ra = await a.exchange(B('same'), E(), S);
        const rb = await b.exchange(B('same'), E(), S);
        assertTypes(ra, '2DCZ', 'A Bind');
        assertTypes(rb, '2DCZ', 'B Bind');
        assert.deepEqual(rows(ra), [['from-a']]);
        assert.deepEqual(rows(rb), [['from-b']]);
      }
    });

    it('a client cannot Bind a statement name another client prepared (it is closed, as PgBouncer closes it)', async () => {
      const a = await raw('one');
      const b = await raw('one');
      assertTypes(await a.exchange(P('mine_only', `SELECT 'a-secret'`), S), '1Z', 'A Parse');
      await refused(b, NOT_PREPARED, B('mine_only'), E(), S);
      await required(() => pooler, 'pooler')().waitForLog(/prepared statement 'mine_only' not found/);
      // A still has it.
      assert.deepEqual(rows(await a.exchange(B('mine_only'), E(), S)), [['a-secret']]);
    });

    it('a Parse of a name the client already holds is refused by the pooler itself, as PgBouncer refuses it', async () => {
      // It went to PostgreSQL renamed, whose 42P05 then named the pooler's server-side statement.
      const a = await raw('one');
      assertTypes(await a.exchange(P('dup', `SELECT '${uniq('dup-one')}'`), S), '1Z', 'first Parse');
      await refused(a, 'prepared statement name is already in use', P('dup', `SELECT 'dup-two'`), S);
      await required(() => pooler, 'pooler')().waitForLog(/prepared statement 'dup' was already prepared/);
    });

    it('a client cannot Bind the pooler\'s server-side name of another client\'s statement', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const text = `SELECT '${uniq('a-private')}'`;
      assertTypes(await a.exchange(P('private', text), B('private'), E(), S), '12DCZ', 'A Parse');
      // The server-side name is visible to any session on that server (pg_prepared_statements).
      const names = await b.query(`SELECT name FROM pg_prepared_statements WHERE statement = '${text.replace(/'/g, "''")}'`);
      assert.equal(names.length, 1, 'A\'s statement is on the one server');
      await refused(b, NOT_PREPARED, B(names[0]!), E(), S);
    });
  });

  // ----------------------------------------------------------------------------------------------
  it('max_prepared_statements=5 bounds every server while 20 clients cycle 20 statements', async () => {
    assert.ok(small);
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => pgClient(small!.port, 'p0')));
    let maxSeen = 0;
    let samples = 0;
    const sample = async (cl: pg.Client): Promise<void> => {
      // A simple query (no parameters): not itself a prepared statement.
      const r = await cl.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_prepared_statements');
      maxSeen = Math.max(maxSeen, r.rows[0]?.n ?? 0);
      samples++;
    };
    try {
      await Promise.all(clients.map(async (cl, owner) => {
        for (let i = 0; i < 200; i++) {
          const k = (i + owner) % 20;
          const r = await cl.query<{ v: number }>({ name: `cyc${k}`, text: `SELECT $1::int + ${k} AS v`, values: [i] });
          assert.equal(r.rows[0]?.v, i + k);
          if (i % 10 === 9) await sample(cl);
        }
      }));
      // Both servers at once: two clients each holding one in a transaction.
      const pids = new Set<number>();
      await Promise.all(clients.slice(0, 2).map(async (cl) => {
        await cl.query('BEGIN');
        const r = await cl.query<{ pid: number; n: number }>('SELECT pg_backend_pid() AS pid, count(*)::int AS n FROM pg_prepared_statements');
        pids.add(r.rows[0]!.pid);
        maxSeen = Math.max(maxSeen, r.rows[0]!.n);
        await new Promise((res) => setTimeout(res, 200));
        await cl.query('COMMIT');
      }));
      assert.equal(pids.size, 2, 'both servers were sampled');
    } finally {
      await Promise.all(clients.map((cl) => cl.end().catch(() => undefined)));
    }
    assert.ok(samples >= 400);
    assert.ok(maxSeen > 0, 'statements were prepared on the servers');
    assert.ok(maxSeen <= 5, `a server held ${maxSeen} prepared statements with max_prepared_statements=5`);
  });

  // ----------------------------------------------------------------------------------------------
  describe('replies on the wire (raw protocol)', () => {
    it('Parse(named)/Describe(S)/Sync: ParseComplete, ParameterDescription, RowDescription; Close(S): CloseComplete', async () => {
      const text = `SELECT $1::int4 + 1 AS a, $2::text AS b, now() AS c, '${uniq('desc')}' AS d`;
      const check = (r: BackendMessage[], what: string): void => {
        assertTypes(r, '1tTZ', what);
        assert.deepEqual(paramOids(r[1]!), [23, 25], `${what}: parameter types`);
        assert.deepEqual(rowFields(r[2]!), [
          { name: 'a', oid: 23 }, { name: 'b', oid: 25 }, { name: 'c', oid: 1184 }, { name: 'd', oid: 25 },
        ], `${what}: row description`);
      };
      const a = await raw('one');
      const b = await raw('one');
      // New on the server (a real Parse of the renamed statement)...
      check(await a.exchange(P('desc1', text), D('S', 'desc1'), S), 'first client');
      // ...and already there (the pooler's unnamed-Parse stand-in answers ParseComplete).
      check(await b.exchange(P('desc_b', text), D('S', 'desc_b'), S), 'second client, statement already on the server');
      // Explicit parameter types are honoured (int8 here, not the int4 of the cast).
      const typed = await a.exchange(P('typed', `SELECT $1 AS x, '${uniq('typed')}' AS y`, [20]), D('S', 'typed'), S);
      assertTypes(typed, '1tTZ', 'explicit parameter oid');
      assert.deepEqual(paramOids(typed[1]!), [20]);
      // A statement without a result: NoData.
      const nodata = await a.exchange(P('nodata', `SET application_name = 'x'`), D('S', 'nodata'), S);
      assertTypes(nodata, '1tnZ', 'statement without result');
      // Describe again later, then Bind and Execute with the described types.
      const r = await a.exchange(D('S', 'desc1'), B('desc1', ['41', 'txt']), E(), S);
      assertTypes(r, 'tT2DCZ', 'Describe + Bind + Execute');
      assert.deepEqual(rows(r)[0]?.slice(0, 2), ['42', 'txt']);
      // Close: CloseComplete; then the name is gone for this client only.
      assertTypes(await a.exchange(C('S', 'desc1'), S), '3Z', 'Close');
      assertTypes(await b.exchange(B('desc_b', ['1', 'x']), E(), S), '2DCZ', 'the other client\'s statement');
      // Close of a name that never existed: PostgreSQL answers CloseComplete.
      assertTypes(await a.exchange(C('S', 'never_existed'), S), '3Z', 'Close of an unknown name');
      await refused(a, NOT_PREPARED, B('desc1', ['1', 'x']), E(), S);
    });

    it('a Describe of a statement the client never prepared closes it, as PgBouncer does', async () => {
      // It was forwarded, and PostgreSQL's ordinary error let the session go on.
      const a = await raw('p0');
      await refused(a, NOT_PREPARED, D('S', 'doesnotexist'), S);
    });

    it('a Parse with a syntax error: ErrorResponse then ReadyForQuery, nothing else; the next pipeline works', async () => {
      const a = await raw('p0');
      const bad = await a.exchange(P('bad', 'SELEC 1'), B('bad'), E(), S);
      assertTypes(bad, 'EZ', 'P bad, B, E, S');
      assert.equal(firstError(bad)?.code, '42601');
      // An error in the middle of a pipeline: the replies before it, then the error.
      const mid = await a.exchange(P('ok1', `SELECT '${uniq('ok1')}'`), B('ok1'), E(), P('bad2', 'SELECT FROM WHERE'), B('bad2'), E(), S);
      assertTypes(mid, '12DCEZ', 'P ok, B, E, P bad, B, E, S');
      const after = await a.exchange(P('ok2', `SELECT 'after-error'`), B('ok2'), E(), S);
      assertTypes(after, '12DCZ', 'the next pipeline');
      assert.deepEqual(rows(after), [['after-error']]);
    });

    it('a pipeline of new, shared, unknown and closed statements: every reply in order', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const shared = `SELECT 'shared' AS s, $1::int AS n`;
      assertTypes(await b.exchange(P('b_shared', shared), S), '1Z', 'B prepares the shared text');
      assertTypes(await a.exchange(P('known', `SELECT 'known'`), S), '1Z', 'A prepares known');
      const n1 = uniq('n1');
      const r = await a.exchange(
        P('n1', `SELECT '${n1}'`), B('n1'), E(),
        P('k2', shared), D('S', 'k2'), B('k2', ['7']), E(),
        C('S', 'n1'), C('S', 'never_existed'),
        B('known'), E(),
        S,
      );
      assertTypes(r, '12DC1tT2DC332DCZ', 'pipeline');
      assert.deepEqual(rows(r).map((x) => x[0]), [n1, 'shared', 'known']);
      assert.deepEqual(rows(r)[1], ['shared', '7']);
    });

    it('a statement prepared on server A still works after the client is linked to server B', async () => {
      const x = await raw('p0');
      const y = await raw('p0');
      const z = await raw('p0');
      const pidOf = async (r: RawConn): Promise<string> => (await r.query('SELECT pg_backend_pid()'))[0]!;
      // X prepares on whatever server it gets, inside a transaction to know which one.
      await x.query('BEGIN');
      const pidA = await pidOf(x);
      const text = `SELECT $1::int * 3 AS v, '${uniq('switch')}' AS tag`;
      assertTypes(await x.exchange(P('sw', text), D('S', 'sw'), B('sw', ['2']), E(), S), '1tT2DCZ', 'prepare on A');
      await x.query('COMMIT');
      // Y and Z take both servers; the one on A keeps it, the other lets go: X must land on B.
      await y.query('BEGIN');
      await z.query('BEGIN');
      const [py, pz] = [await pidOf(y), await pidOf(z)];
      assert.notEqual(py, pz, 'Y and Z hold the two servers');
      assert.ok(py === pidA || pz === pidA, 'one of them holds server A');
      const holderOfA = py === pidA ? y : z;
      const other = py === pidA ? z : y;
      await other.query('COMMIT');
      // One pipeline on B: Describe and Bind the statement B has never seen, and an interleaved
      // new Parse, with the pid to prove where it ran.
      const r = await x.exchange(
        D('S', 'sw'), B('sw', ['5']), E(),
        P('sw2', `SELECT pg_backend_pid()::text, '${uniq('sw2')}'`), B('sw2'), E(),
        B('sw', ['6']), E(),
        S,
      );
      assertTypes(r, 'tT2DC12DC2DCZ', 'pipeline on server B');
      const got = rows(r);
      assert.deepEqual(got[0]?.[0], '15');
      assert.notEqual(got[1]?.[0], pidA, 'the pipeline ran on the other server');
      assert.deepEqual(got[2]?.[0], '18');
      await holderOfA.query('COMMIT');
      // And back on A (or wherever it lands): still fine.
      assertTypes(await x.exchange(B('sw', ['1']), E(), B('sw2'), E(), S), '2DC2DCZ', 'after the switch');
    });

    it('a statement whose Parse failed can be prepared once it is valid (table created later)', async () => {
      const a = await raw('one');
      const text = `SELECT * FROM late_t_${process.pid}`;
      const first = await a.exchange(P('late', text), B('late'), E(), S);
      assertTypes(first, 'EZ', 'Parse of a missing table');
      assert.equal(firstError(first)?.code, '42P01');
      await c().query(`CREATE TABLE late_t_${process.pid} (x int); INSERT INTO late_t_${process.pid} VALUES (1); GRANT ALL ON late_t_${process.pid} TO PUBLIC`);
      const second = await a.exchange(P('late', text), B('late'), E(), S);
      assertTypes(second, '12DCZ', 'the same Parse once the table exists');
    });

    it('a Parse skipped after an earlier error in the pipeline is not taken as prepared', async () => {
      const a = await raw('one');
      const skipped = `SELECT '${uniq('skipped')}' AS v`;
      // generate_series: no constant folding at Bind, the error comes from Execute.
      const r = await a.exchange(P('div', 'SELECT x / $1::int FROM generate_series(1, 1) x'), B('div', ['0']), E(), P('later', skipped), B('later'), E(), S);
      assertTypes(r, '12EZ', 'division by zero, then the rest skipped');
      assert.equal(firstError(r)?.code, '22012');
      // PostgreSQL never saw the second Parse: the client prepares it again.
      const again = await a.exchange(P('later', skipped), B('later'), E(), S);
      assertTypes(again, '12DCZ', 'the skipped statement, prepared again');
    });

    it('a Parse skipped after an error stays the client\'s: a later Bind parses it on the server first (as PgBouncer)', async () => {
      // The pooler forgot it, so the Bind went to PostgreSQL unrenamed: "does not exist".
      const a = await raw('one');
      const text = `SELECT '${uniq('kept')}' AS v`;
      const r = await a.exchange(P('div0', 'SELECT x / $1::int FROM generate_series(1, 1) x'), B('div0', ['0']), E(), P('kept', text), S);
      assertTypes(r, '12EZ', 'division by zero, then the Parse skipped');
      const bound = await a.exchange(B('kept'), E(), S);
      assertTypes(bound, '2DCZ', 'Bind of the skipped statement');
      assert.match(rows(bound)[0]?.[0] ?? '', /^kept-/);
    });

    it('a Parse refused in an aborted transaction is not taken as prepared', async () => {
      const a = await raw('one');
      const text = `SELECT '${uniq('aborted')}' AS v`;
      await a.query('BEGIN');
      const failed = await a.exchange(Q('SELECT 1/0'));
      assert.equal(firstError(failed)?.code, '22012');
      const refused = await a.exchange(P('inabort', text), B('inabort'), E(), S);
      assertTypes(refused, 'EZ', 'Parse in an aborted transaction');
      assert.equal(firstError(refused)?.code, '25P02');
      await a.query('ROLLBACK');
      const again = await a.exchange(P('inabort', text), B('inabort'), E(), S);
      assertTypes(again, '12DCZ', 'the same Parse after ROLLBACK');
    });

    it('the client\'s unnamed statement survives a named Parse of a statement the server already has', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const shared = `SELECT '${uniq('named')}' AS v`;
      assertTypes(await a.exchange(P('have', shared), S), '1Z', 'A puts the statement on the server');
      const r = await b.exchange(P('', `SELECT 'unnamed' AS v`), P('mine', shared), B(''), E(), S);
      assertTypes(r, '112DCZ', 'P unnamed, P named (already on the server), B unnamed, E, S');
      assert.deepEqual(rows(r), [['unnamed']], 'the Bind of the unnamed statement ran the client\'s unnamed statement');
    });

    it('a failing simple Query pipelined before a Bind that needs a re-prepare: no stray ParseComplete', async () => {
      const x = await raw('one');
      const w = await raw('one');
      const text = `SELECT '${uniq('hidden')}' AS v`;
      assertTypes(await x.exchange(P('hp', text), S), '1Z', 'X prepares');
      // Another client drops every statement of the one server: X's must be prepared again.
      await w.query('DEALLOCATE ALL');
      const r = await x.exchange(Q('SELECT 1/0'), B('hp'), E(), S);
      assertTypes(r, 'EZ2DCZ', 'Query error, then B, E, S');
    });
  });

  // ----------------------------------------------------------------------------------------------
  describe('SQL DEALLOCATE, DEALLOCATE ALL, DISCARD ALL', () => {
    it('DEALLOCATE name drops the client\'s own statement only', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const text = `SELECT '${uniq('dealloc')}' AS v`;
      assertTypes(await a.exchange(P('d1', text), S), '1Z', 'A');
      assertTypes(await b.exchange(P('d1', text), S), '1Z', 'B, same name and text');
      const d = await a.exchange(Q('DEALLOCATE d1'));
      assertTypes(d, 'CZ', 'DEALLOCATE d1');
      assert.equal(d[0]!.body.toString('utf8', 0, d[0]!.body.length - 1), 'DEALLOCATE');
      assertTypes(await b.exchange(B('d1'), E(), S), '2DCZ', 'B\'s d1 still works');
      // Quoted names and DEALLOCATE PREPARE; a name that is free again may be parsed again (a
      // Parse of a held name would close the client); an unknown name is PostgreSQL's own error.
      assertTypes(await a.exchange(P('MiXed', text), S), '1Z', 'A MiXed');
      assertTypes(await a.exchange(Q('DEALLOCATE PREPARE "MiXed"')), 'CZ', 'DEALLOCATE PREPARE "MiXed"');
      assertTypes(await a.exchange(P('MiXed', text), S), '1Z', 'MiXed is free again');
      const unknown = await a.exchange(Q('DEALLOCATE nosuch'));
      assertTypes(unknown, 'EZ', 'DEALLOCATE of an unknown name');
      assert.equal(firstError(unknown)?.code, '26000');
      // A statement the client has but its server no longer holds (another client's DEALLOCATE
      // ALL dropped them all): answered by the pooler, as PostgreSQL would.
      assertTypes(await a.exchange(P('d2', text), S), '1Z', 'A d2');
      await b.query('DEALLOCATE ALL');
      const local = await a.exchange(Q('DEALLOCATE d2'));
      assertTypes(local, 'CZ', 'DEALLOCATE d2');
      assert.equal(local[0]!.body.toString('utf8', 0, local[0]!.body.length - 1), 'DEALLOCATE');
      assertTypes(await a.exchange(P('d2', text), S), '1Z', 'd2 is free again');
      // A Bind of a dropped name closes the client (PgBouncer's test_deallocate_all).
      await refused(a, NOT_PREPARED, B('d1'), E(), S);
    });

    for (const command of ['DEALLOCATE ALL', 'DISCARD ALL']) {
      it(`${command} drops all of the client's statements, not another client's`, async () => {
        const a = await raw('one');
        const b = await raw('one');
        const t1 = `SELECT '${uniq('all1')}' AS v`;
        const t2 = `SELECT '${uniq('all2')}' AS v`;
        assertTypes(await a.exchange(P('a1', t1), P('a2', t2), S), '11Z', 'A');
        assertTypes(await b.exchange(P('b1', t1), S), '1Z', 'B');
        const d = await a.exchange(Q(command));
        assertTypes(d, 'CZ', command);
        assertTypes(await b.exchange(B('b1'), E(), S), '2DCZ', 'B\'s statement');
        assertTypes(await a.exchange(P('a1', t1), B('a1'), E(), S), '12DCZ', 'A prepares again');
        await refused(a, NOT_PREPARED, B('a2'), E(), S);
      });
    }

    it('DEALLOCATE name sent with the extended protocol (libpq PQexecParams, as psycopg 3 does)', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const text = `SELECT '${uniq('xdealloc')}' AS v`;
      assertTypes(await a.exchange(P('xd', text), S), '1Z', 'A');
      assertTypes(await b.exchange(P('xd', text), S), '1Z', 'B, same name and text');
      const d = await a.exchange(P('', 'DEALLOCATE xd'), B(''), E(), S);
      assertTypes(d, '12CZ', 'unnamed Parse/Bind/Execute of DEALLOCATE xd');
      assertTypes(await b.exchange(B('xd'), E(), S), '2DCZ', 'B\'s xd still works');
      await refused(a, NOT_PREPARED, B('xd'), E(), S);
    });

    it('DEALLOCATE ALL sent with the extended protocol leaves other clients\' statements working', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const text = `SELECT '${uniq('xall')}' AS v`;
      assertTypes(await a.exchange(P('xa', text), S), '1Z', 'A');
      assertTypes(await b.exchange(P('xb', text), S), '1Z', 'B, same text');
      assertTypes(await a.exchange(P('', 'DEALLOCATE ALL'), B(''), E(), S), '12CZ', 'unnamed DEALLOCATE ALL');
      assertTypes(await b.exchange(B('xb'), E(), S), '2DCZ', 'B\'s statement still works');
      await refused(a, NOT_PREPARED, B('xa'), E(), S);
    });

    it('a DISCARD ALL refused inside a transaction block leaves the statements in place', async () => {
      const a = await raw('one');
      const b = await raw('one');
      const text = `SELECT '${uniq('keep')}' AS v`;
      assertTypes(await a.exchange(P('keep', text), S), '1Z', 'A');
      await a.query('BEGIN');
      const refused = await a.exchange(Q('DISCARD ALL'));
      assert.equal(firstError(refused)?.code, '25001');
      await a.query('ROLLBACK');
      assertTypes(await a.exchange(B('keep'), E(), S), '2DCZ', 'A\'s statement survived the refused DISCARD ALL');
      assertTypes(await b.exchange(P('bkeep', text), B('bkeep'), E(), S), '12DCZ', 'B prepares the same text');
    });
  });

  // ----------------------------------------------------------------------------------------------
  describe('psycopg 3 against the rules PgBouncer follows', () => {
    /** Run a scenario of test/support/psycopg_client.py; its results, or null when skipped. */
    const scenario = async (t: { skip(msg: string): void }, args: string[]): Promise<unknown[] | null> => {
      const py = await psycopgPython();
      if ('skip' in py) {
        t.skip(py.skip);
        return null;
      }
      const r = await runCommand(py.python, [path.join(SUPPORT_SRC, 'psycopg_client.py'), ...args],
        { timeoutMs: 60_000, env: { PYTHONPATH: undefined, PYTHONHOME: undefined } });
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { results?: unknown[]; errors?: string[] };
      assert.deepEqual(out.errors, [], r.stderr);
      assert.equal(r.code, 0, r.stderr);
      return out.results ?? [];
    };
    const dsn = (p: number, db: string) => `host=127.0.0.1 port=${p} user=${USER} password=${PASSWORD} dbname=${db} connect_timeout=10`;

    it('a statement PostgreSQL skipped in a failed pipeline stays the client\'s, and is parsed again when bound', async (t) => {
      // psycopg takes every Parse of a failed pipeline as done and later binds the skipped one
      // ("prepared statement _pg3_2 does not exist": the pooler had forgotten it).
      const results = await scenario(t, ['failed_pipeline', dsn(port(), 'one')]);
      if (results !== null) assert.deepEqual(results, ['failed', true, true, true]);
    });

    it('max_prepared_statements changed by SET applies to a connected client (raised, lowered, 0)', async (t) => {
      // The limit was read once, at the client's login: SET changed nothing for it.
      const target = `host=127.0.0.1 port=${c().port}`;
      const own = await startPooler(
        {
          pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', admin_users: USER },
          databases: { p0: `${target} dbname=p0` },
        },
        { userlist: { [USER]: PASSWORD } },
      );
      try {
        const results = await scenario(t, ['max_prepared', dsn(own.port, 'p0'), dsn(own.port, 'pgbouncer')]);
        if (results !== null) assert.deepEqual(results, [1, 5, 5, 2, '26000']);
      } finally {
        await own.stop();
      }
    });
  });

  // ----------------------------------------------------------------------------------------------
  describe('SQL PREPARE / EXECUTE', () => {
    it('transaction mode: PREPARE, EXECUTE and DEALLOCATE within one transaction work', async () => {
      const cl = await pgClient(port(), 'p0');
      try {
        await cl.query('BEGIN');
        await cl.query('PREPARE sqlp(int) AS SELECT $1 + 1 AS v');
        assert.equal((await cl.query<{ v: number }>('EXECUTE sqlp(41)')).rows[0]?.v, 42);
        assert.equal((await cl.query<{ v: number }>('EXECUTE sqlp(1)')).rows[0]?.v, 2);
        await cl.query('DEALLOCATE sqlp');
        await cl.query('COMMIT');
        // One multi-statement query is one transaction too.
        const r = (await cl.query('PREPARE sqlq AS SELECT 7 AS v; EXECUTE sqlq; DEALLOCATE sqlq')) as unknown as pg.QueryResult[];
        assert.equal(r[1]?.rows[0]?.v, 7);
      } finally {
        await cl.end();
      }
    });

    it('transaction mode: a SQL-prepared statement belongs to the server connection, not the client', async () => {
      const a = await pgClient(port(), 'one');
      const b = await pgClient(port(), 'one');
      try {
        await a.query(`PREPARE sqlleak AS SELECT 'leaked' AS v`);
        // B shares the one server: it sees A's SQL statement (documented; PgBouncer does the same).
        assert.equal((await b.query<{ v: string }>('EXECUTE sqlleak')).rows[0]?.v, 'leaked');
        await b.query('DEALLOCATE sqlleak');
        await assert.rejects(a.query('EXECUTE sqlleak'), (e: PgError) => e.code === '26000');
      } finally {
        await Promise.all([a.end(), b.end()]);
      }
    });

    it('session mode: named protocol statements keep their names, SQL PREPARE/EXECUTE span transactions', async () => {
      const cl = await pgClient(port(), 'sess');
      try {
        for (let i = 0; i < 5; i++) {
          await cl.query('BEGIN');
          const r = await cl.query<{ v: number }>({ name: 'sessq', text: 'SELECT $1::int + 1 AS v', values: [i] });
          assert.equal(r.rows[0]?.v, i + 1);
          await cl.query('COMMIT');
        }
        await cl.query('PREPARE sessp(int) AS SELECT $1 * 2 AS v');
        for (let i = 0; i < 3; i++) {
          assert.equal((await cl.query<{ v: number }>(`EXECUTE sessp(${i})`)).rows[0]?.v, i * 2);
        }
        const names = (await cl.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows.map((r) => r.name);
        assert.deepEqual(names, ['sessp', 'sessq'], 'no renaming in session mode');
        await cl.query('DEALLOCATE sessp');
      } finally {
        await cl.end();
      }
      // A raw client: the replies are PostgreSQL's own, names included.
      const a = await raw('sess');
      assertTypes(await a.exchange(P('rs', 'SELECT $1::int AS v'), D('S', 'rs'), B('rs', ['3']), E(), C('S', 'rs'), S), '1tT2DC3Z', 'session pipeline');
      const gone = await a.exchange(B('rs', ['1']), E(), S);
      assert.match(firstError(gone)?.message ?? '', /"rs" does not exist/);
    });
  });

  // ----------------------------------------------------------------------------------------------
  describe('DDL that changes a result type ("cached plan must not change result type")', () => {
    it('the client gets the error; preparing the text again (new name, or another client) works', async () => {
      const table = `ddl_raw_${process.pid}`;
      await c().query(`CREATE TABLE ${table} (a int); INSERT INTO ${table} VALUES (1); GRANT ALL ON ${table} TO PUBLIC`);
      const a = await raw('one');
      const b = await raw('one');
      const text = `SELECT * FROM ${table}`;
      const before = await a.exchange(P('star1', text), B('star1'), E(), S);
      assertTypes(before, '12DCZ', 'before the DDL');
      await c().query(`ALTER TABLE ${table} ADD COLUMN b int DEFAULT 2`);
      const stale = await a.exchange(B('star1'), E(), S);
      assertTypes(stale, 'EZ', 'the old statement after ADD COLUMN');
      assert.equal(firstError(stale)?.code, '0A000');
      assert.match(firstError(stale)?.message ?? '', /cached plan must not change result type/);
      // As on a direct connection: a new Parse of the text plans it afresh.
      const renamed = await a.exchange(P('star2', text), D('S', 'star2'), B('star2'), E(), S);
      assertTypes(renamed, '1tT2DCZ', 'A prepares the same text under a new name');
      assert.deepEqual(rowFields(renamed[2]!).map((f) => f.name), ['a', 'b']);
      assert.deepEqual(rows(renamed), [['1', '2']]);
      const other = await b.exchange(P('bstar', text), B('bstar'), E(), S);
      assertTypes(other, '12DCZ', 'another client prepares the text after the DDL');
      assert.deepEqual(rows(other), [['1', '2']]);
    });

    it('postgres.js recovers by itself (it re-prepares on this error), as it does against PostgreSQL', async () => {
      const table = `ddl_js_${process.pid}`;
      await c().query(`CREATE TABLE ${table} (a int); INSERT INTO ${table} VALUES (1); GRANT ALL ON ${table} TO PUBLIC`);
      const run = async (opts: { port: number; database: string }, label: string): Promise<void> => {
        const sql = postgres({ host: '127.0.0.1', ...opts, user: USER, password: PASSWORD, max: 1, onnotice: () => undefined });
        try {
          // With a parameter: postgres.js sends a query without any as a simple Query.
          const q = () => sql.unsafe(`SELECT * FROM ${table} WHERE a = $1`, [1], { prepare: true });
          assert.deepEqual([...(await q())].map((r) => ({ ...r })), [{ a: 1 }]);
          await c().query(`ALTER TABLE ${table} ADD COLUMN b${opts.port} int DEFAULT 2`);
          const after = [...(await q())].map((r) => ({ ...r }));
          assert.equal(Object.keys(after[0] ?? {}).length, 2, `${label}: ${JSON.stringify(after)}`);
        } catch (e) {
          throw new Error(`${label}: ${(e as Error).message}`);
        } finally {
          await sql.end({ timeout: 5 });
        }
      };
      // The control: postgres.js straight to PostgreSQL.
      await run({ port: c().port, database: 'p0' }, 'postgres.js straight to PostgreSQL');
      await c().query(`ALTER TABLE ${table} DROP COLUMN b${c().port}`);
      await run({ port: port(), database: 'one' }, 'postgres.js through the pooler');
    });
  });

  // ----------------------------------------------------------------------------------------------
  it('the console shows prepared statements (SHOW SERVERS/CLIENTS prepared_statements, SHOW TOTALS counters)', async () => {
    const a = await raw('one');
    assertTypes(await a.exchange(P('console1', `SELECT '${uniq('console')}'`), B('console1'), E(), S), '12DCZ', 'prepare');
    const admin = await pgClient(port(), 'pgbouncer');
    try {
      const clients = (await admin.query<{ database: string; prepared_statements: string }>('SHOW CLIENTS')).rows;
      assert.ok(clients.some((r) => r.database === 'one' && Number(r.prepared_statements) >= 1), JSON.stringify(clients));
      const servers = (await admin.query<{ database: string; prepared_statements: string }>('SHOW SERVERS')).rows;
      assert.ok(servers.some((r) => r.database === 'one' && Number(r.prepared_statements) >= 1), JSON.stringify(servers));
      const totals = new Map((await admin.query<{ name: string; value: string }>('SHOW TOTALS')).rows.map((r) => [r.name, Number(r.value)]));
      assert.ok((totals.get('total_ps_client_parse_count') ?? 0) > 0, 'client parses counted');
      assert.ok((totals.get('total_ps_server_parse_count') ?? 0) > 0, 'server parses counted');
      assert.ok((totals.get('total_ps_bind_count') ?? 0) > 0, 'binds counted');
    } finally {
      await admin.end();
    }
  });
});
