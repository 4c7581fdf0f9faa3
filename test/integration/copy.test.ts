// COPY through the real pooler: 200 MB each way with psql, byte for byte, while the pooler's RSS
// is read from /proc every 100 ms (it must stream, never buffer a whole COPY); a raw-socket client
// that stops reading in the middle of COPY TO STDOUT (the pooler must stop reading the server,
// so PostgreSQL waits in ClientWrite and the pooler's memory stays flat), then reads on and gets
// every byte; and a client that sends Terminate in the middle of COPY FROM STDIN, after which the
// pooler closes that server and serves everyone else.
//
// The data are generated, never stored: rows `<i>\t<200 chars of [a-z0-9]>\n`, which COPY's text
// format gives back unchanged, so the SHA-256 of the input is the SHA-256 of any correct output.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { before, describe, it } from 'node:test';
import pg from 'pg';
import { cstr, msg } from '../support/bytes.js';
import { queryOnce as queryOnceWith } from '../support/pg-client.js';
import { SUPERUSER } from '../support/pg-cluster.js';
import { errorFields, RawConn, type BackendMessage } from '../support/raw-client.js';
import { useSetup } from '../support/suite.js';
import { sleep } from '../support/wait.js';

const ROWS = 1_000_000;
const PAYLOAD = 200;
/** Rows per generated chunk (~1 MB). */
const CHUNK_ROWS = 5_000;
const RSS_LIMIT_KB = 150 * 1024;
const RSS_EVERY_MS = 100;
const STALL_MS = 3_000;
const COPY_TIMEOUT_MS = 90_000;

const USER = 'c_copy';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const WHEEL = ALPHABET.repeat(Math.ceil((PAYLOAD + ALPHABET.length) / ALPHABET.length));

/** Rows [from, to) in COPY text format. */
function rows(from: number, to: number): Buffer {
  let s = '';
  for (let i = from; i < to; i++) {
    const k = i % ALPHABET.length;
    s += `${i}\t${WHEEL.slice(k, k + PAYLOAD)}\n`;
  }
  return Buffer.from(s, 'latin1');
}

function* chunks(): Generator<Buffer> {
  for (let i = 0; i < ROWS; i += CHUNK_ROWS) yield rows(i, Math.min(ROWS, i + CHUNK_ROWS));
}

let expected = { sha256: '', bytes: 0 };

// Synchronous, so done before the cluster starts (Node 20 does not wait for a top-level `before`
// before starting the next one).
before(() => {
  const hash = createHash('sha256');
  let bytes = 0;
  for (const chunk of chunks()) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  expected = { sha256: hash.digest('hex'), bytes };
});

const { c, p } = useSetup({
  cluster: { name: 'copy' },
  roles: [USER],
  prepare: async (cluster) => {
    // A sequential scan of a table this large (over a quarter of shared_buffers) starts where the
    // last one was reported, and wraps around (synchronize_seqscans): COPY TO STDOUT after the
    // count(*) below then gives every row in a rotated order, the same bytes with another hash.
    await cluster.query(`CREATE TABLE big (id int, payload text);
                         CREATE TABLE copy_abort (id int, payload text);
                         GRANT ALL ON big, copy_abort TO ${USER};
                         ALTER ROLE ${USER} SET synchronize_seqscans = off`);
  },
  pooler: {
    ini: () => ({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '2', query_wait_timeout: '20' },
      databases: {
        p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
        onepool: `host=127.0.0.1 port=${c().port} dbname=p0 pool_size=1`,
      },
    }),
    stopTimeoutMs: 3_000,
  },
  dumpLogs: { poolerLines: 200 },
});

// ------------------------------------------------------------------------------------------------
// The pooler's memory

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m?.[1] === undefined ? -1 : Number(m[1]);
}

/** VmRSS of the pooler every RSS_EVERY_MS until stop(); max in kB. */
function watchRss(pid: number): { stop(): { maxKb: number; samples: number } } {
  let maxKb = rssKb(pid);
  let samples = 1;
  const timer = setInterval(() => {
    maxKb = Math.max(maxKb, rssKb(pid));
    samples++;
  }, RSS_EVERY_MS);
  return {
    stop() {
      clearInterval(timer);
      maxKb = Math.max(maxKb, rssKb(pid));
      return { maxKb, samples: samples + 1 };
    },
  };
}

// ------------------------------------------------------------------------------------------------
// psql with streamed stdin/stdout

interface StreamedRun {
  code: number | null;
  stderr: string;
  sha256: string;
  bytes: number;
}

/**
 * Run `psql -X -v ON_ERROR_STOP=1 -d conn -c cmd`, feeding `input` to its stdin and hashing its
 * stdout as it comes (200 MB never sit in this process either).
 */
function psqlStreamed(conn: string, cmd: string, input: Iterable<Buffer> | null): Promise<StreamedRun> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && v !== undefined) env[k] = v;
  env.PGCONNECT_TIMEOUT = '10';
  const child = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conn, '-c', cmd], { env, stdio: 'pipe' });
  const hash = createHash('sha256');
  let bytes = 0;
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => {
    hash.update(b);
    bytes += b.length;
  });
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin.on('error', () => undefined);
  if (input === null) child.stdin.end();
  else Readable.from(input).pipe(child.stdin);
  const timer = setTimeout(() => child.kill('SIGKILL'), COPY_TIMEOUT_MS);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, sha256: hash.digest('hex'), bytes });
    });
  });
}

// ------------------------------------------------------------------------------------------------
// A raw protocol client (hand-built frontend bytes, backend messages parsed as they come)

async function rawLogin(database: string): Promise<RawConn> {
  return (await RawConn.login(p().port, { user: USER, database }, { timeoutMs: 10_000 })).conn;
}

function errorText(body: Buffer): string {
  return Object.entries(errorFields(body)).map(([k, v]) => `${k}=${v}`).join(' ');
}

const query = (sql: string) => msg('Q', cstr(sql));
const copyData = (b: Buffer) => msg('d', b);
const TERMINATE = msg('X');

function queryOnce<R extends pg.QueryResultRow>(sql: string, db = 'p0', user = USER): Promise<R[]> {
  return queryOnceWith<R>({ connectionString: p().url(user, '', db), connectionTimeoutMillis: 10_000, query_timeout: 20_000 }, sql);
}

// ------------------------------------------------------------------------------------------------

describe('COPY through the pooler', () => {
  it('moves 200 MB in with COPY FROM STDIN and out with COPY TO STDOUT byte for byte, in bounded memory', async (t) => {
    const url = p().url(USER, '', 'p0');
    const baseKb = rssKb(p().pid);

    const inRss = watchRss(p().pid);
    const copyIn = await psqlStreamed(url, '\\copy big from pstdin', chunks());
    const inMem = inRss.stop();
    assert.equal(copyIn.code, 0, `psql \\copy from pstdin failed: ${copyIn.stderr}`);

    const outRss = watchRss(p().pid);
    const copyOut = await psqlStreamed(url, '\\copy big to pstdout', null);
    const outMem = outRss.stop();
    assert.equal(copyOut.code, 0, `psql \\copy to pstdout failed: ${copyOut.stderr}`);

    if (copyOut.sha256 !== expected.sha256 || copyOut.bytes !== expected.bytes) {
      // Which way was it? Read the table back without the pooler.
      const direct = await psqlStreamed(`postgresql://${SUPERUSER}@/p0?host=${encodeURIComponent(c().socketDir)}&port=${c().port}`,
        '\\copy big to pstdout', null);
      const inOk = direct.sha256 === expected.sha256;
      assert.fail(`COPY through the pooler is not byte-identical: ${copyOut.bytes} bytes out of ${expected.bytes}; ` +
        (inOk ? 'the table is right, so COPY TO STDOUT corrupted it' : `the table itself differs (${direct.bytes} bytes), so COPY FROM STDIN did`));
    }
    const rss = `RSS before ${baseKb} kB, max during COPY FROM ${inMem.maxKb} kB (${inMem.samples} samples), during COPY TO ${outMem.maxKb} kB (${outMem.samples} samples)`;
    t.diagnostic(rss);
    assert.ok(inMem.maxKb < RSS_LIMIT_KB && outMem.maxKb < RSS_LIMIT_KB, `the pooler's memory grew with the COPY: ${rss}`);
  });

  it('stops reading the server while a client stalls in COPY TO STDOUT, then delivers every byte', async (t) => {
    const count = (await c().query<{ n: number }>('SELECT count(*)::int AS n FROM big')).rows[0]?.n;
    assert.equal(count, ROWS, 'the previous test did not load the table');
    const raw = await rawLogin('p0');
    const hash = createHash('sha256');
    let bytes = 0;
    raw.onCopyData = (body) => {
      hash.update(body);
      bytes += body.length;
    };
    const rss = watchRss(p().pid);
    try {
      raw.send(query('COPY big TO STDOUT'));
      const response = await raw.expectNext(10_000);
      assert.equal(response.type, 'H', `expected CopyOutResponse, got '${response.type}' ${errorText(response.body)}`);
      // Read a little, then stop reading altogether.
      const readDeadline = Date.now() + 10_000;
      while (bytes < 1_000_000) {
        assert.ok(!raw.closed && Date.now() < readDeadline, `COPY TO STDOUT sent only ${bytes} bytes`);
        await sleep(5);
      }
      raw.sock.pause();
      const stalledAt = bytes;
      // While the client reads nothing, PostgreSQL must end up blocked writing to the pooler.
      const waits = new Set<string>();
      const stallEnd = Date.now() + STALL_MS;
      while (Date.now() < stallEnd) {
        const r = await c().query<{ w: string | null }>(
          `SELECT wait_event AS w FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'COPY big TO STDOUT%'`, 'postgres', [USER]);
        for (const row of r.rows) waits.add(String(row.w));
        await sleep(200);
      }
      const stalledMem = rssKb(p().pid);
      assert.ok(waits.has('ClientWrite'), `PostgreSQL never waited on ClientWrite while the client stalled (saw ${[...waits].join(', ')}): the pooler kept reading`);
      assert.ok(bytes - stalledAt < 2_000_000, `the paused client still took ${bytes - stalledAt} bytes`);
      raw.sock.resume();
      let done: BackendMessage;
      for (;;) {
        done = await raw.expectNext(COPY_TIMEOUT_MS);
        if (done.type === 'C' || done.type === 'E') break;
        assert.equal(done.type, 'c', `unexpected '${done.type}' during COPY`);
      }
      assert.equal(done.type, 'C', `COPY ended with ${errorText(done.body)}`);
      assert.equal(done.body.toString('latin1', 0, done.body.length - 1), `COPY ${ROWS}`);
      assert.equal((await raw.expectNext(10_000)).type, 'Z');
      const mem = rss.stop();
      t.diagnostic(`pooler RSS max ${mem.maxKb} kB, ${stalledMem} kB during the stall; PostgreSQL wait events seen: ${[...waits].join(', ')}`);
      assert.equal(bytes, expected.bytes);
      assert.equal(hash.digest('hex'), expected.sha256, 'the stalled COPY TO STDOUT came out different');
      assert.ok(mem.maxKb < RSS_LIMIT_KB, `the pooler buffered for the stalled client: max RSS ${mem.maxKb} kB (${stalledMem} kB during the stall)`);
    } finally {
      rss.stop();
      raw.destroy();
    }
  });

  it('closes the server of a client that sends Terminate in the middle of COPY FROM STDIN, and keeps serving', async () => {
    const raw = await rawLogin('onepool');
    let copyPid: number | undefined;
    try {
      raw.send(query('COPY copy_abort FROM STDIN'));
      const response = await raw.expectNext(10_000);
      assert.equal(response.type, 'G', `expected CopyInResponse, got '${response.type}' ${errorText(response.body)}`);
      raw.send(copyData(rows(0, 1_000)));
      raw.send(copyData(rows(1_000, 2_000)));
      const r = await c().query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'COPY copy_abort%'`, 'postgres', [USER]);
      copyPid = r.rows[0]?.pid;
      assert.ok(copyPid !== undefined, 'the COPY is not running on any backend');
      // Terminate, then the socket closes: the client is gone mid-COPY.
      raw.sock.end(TERMINATE);
    } finally {
      await sleep(50);
      raw.destroy();
    }
    // That server cannot be reused (it is inside a COPY): it is closed.
    const deadline = Date.now() + 5_000;
    while ((await c().backendPids({ user: USER })).includes(copyPid)) {
      assert.ok(Date.now() < deadline, `backend ${copyPid} of the abandoned COPY is still there after 5 s`);
      await sleep(50);
    }
    // The pool of one has its slot back, and the aborted COPY left nothing behind.
    assert.deepEqual(await queryOnce<{ n: number }>('SELECT count(*)::int AS n FROM copy_abort', 'onepool'), [{ n: 0 }]);
    assert.deepEqual(await queryOnce<{ x: number }>('SELECT 1 AS x'), [{ x: 1 }]);
  });
});
