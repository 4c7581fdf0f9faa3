// Hostile and malformed input against a live pooler (issue 7): every case must end in an
// ErrorResponse or a close for that client, never a hang and never a crash, and the pooler keeps
// serving everyone else with its memory back near where it was.
//
// - Whole connections (2 000 here, 10 000 in `npm run fuzz`) generated from valid first packets and message sequences (startup,
//   SSLRequest, GSSENCRequest, CancelRequest, direct TLS, PasswordMessage/SASL, queries, the
//   extended protocol, COPY messages), mutated with bench/fuzz.ts's mutator, cut into random
//   TCP segments, at a concurrency of 50; then a normal client works and RSS is compared.
// - Concrete cases, one test each: huge and malformed startup packets, bad length fields before,
//   during and after login, unknown message types, SSLRequest at the wrong time, plaintext after
//   an SSLRequest, TLS garbage, slowloris (half messages), 5 000 silent connections, a cancel flood,
//   a Terminate inside COPY FROM STDIN, the admin console with bad SQL / unknown commands / a user
//   without rights, and a few cases that found bugs (split headers, unbounded buffering, a
//   malformed server message).
//
// Poolers: `main` (transaction mode, client TLS allow, auth via hba) serves the concrete cases;
// the 10 000-connection run and each case able to take a pooler down get a pooler of their own,
// so one crash does not hide the other results.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { after, afterEach, before, describe, it } from 'node:test';
import { chunkStream, mutate, Rng } from '../../bench/fuzz.js';
import { cancelRequest, cstr, gssencRequest, int32, msg, sslRequest, startupPacket, untyped, V3 } from '../support/bytes.js';
import { queryOnce } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import type { Pki } from '../support/pki.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { errorFields, md5Start, RawConn, type BackendMessage } from '../support/raw-client.js';
import { scramSecret } from '../support/secrets.js';
import { drainedWithin, sleep } from '../support/wait.js';

// ------------------------------------------------------------------------------------------------
// Constants and small helpers

const LOGIN_TIMEOUT_S = 1;
const IDLE_TIMEOUT_S = 2;
/** Janitor period (1/3 s), scheduling and a loaded CI machine. */
const SLACK_MS = 1_500;
const ADMIN = { name: 'hostile_admin', password: 'admin-pass-1' };
const STATS = { name: 'hostile_stats', password: 'stats-pass-1' };
const NOBODY = { name: 'hostile_nobody', password: 'nobody-pass-1' };

/** VmRSS of a process in MB (Linux). */
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m?.[1] !== undefined, 'no VmRSS');
  return Number(m[1]) / 1024;
}

/** The open-files limit this process (and the pooler it starts) runs under. */
function fdLimit(): number {
  try {
    return Number(execFileSync('bash', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()) || 1024;
  } catch {
    return 1024;
  }
}

/** Log in as `user` (trust via the pooler's hba) and read up to ReadyForQuery. */
async function login(port: number, user: string = USERS.trust.name, database = 'p0'): Promise<RawConn> {
  return (await RawConn.login(port, { user, database })).conn;
}

/** md5 login over a raw socket, up to ReadyForQuery. */
async function loginMd5(port: number, user: string, password: string, database: string): Promise<RawConn> {
  const { conn } = await md5Start(port, user, password, database);
  await conn.until('Z');
  return conn;
}

/** A query over a raw connection: its messages up to ReadyForQuery (errors included). */
async function rawQuery(raw: RawConn, sql: string, timeoutMs = 5_000): Promise<BackendMessage[]> {
  raw.send(msg('Q', cstr(sql)));
  return raw.until('Z', { onError: 'keep', timeoutMs });
}

function pgQuery(port: number, sql: string, user: string = USERS.trust.name, password?: string, database = 'p0'): Promise<unknown[]> {
  return queryOnce({ host: '127.0.0.1', port, user, password, database, connectionTimeoutMillis: 10_000, query_timeout: 15_000 }, sql);
}

/** Run `items` through `fn` with at most `concurrency` at a time. */
async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

// ------------------------------------------------------------------------------------------------
// Whole-connection case generator

interface HostileCase {
  seed: number;
  chunks: Buffer[];
  /** How the client ends its side once everything is written. */
  finish: 'end' | 'reset' | 'silent';
}

function generateCase(seed: number): HostileCase {
  const r = new Rng(seed);
  const users = [USERS.trust.name, USERS.md5.name, USERS.scram.name, STATS.name, 'nobody', '', 'x'.repeat(70)];
  const startup = () =>
    startupPacket(
      Object.fromEntries(
        [
          ['user', r.pick(users)],
          ['database', r.pick(['p0', 'p1', 'pgbouncer', 'nodb', ''])],
          ...(r.chance(0.2) ? [[r.pick(['application_name', 'options', '_pq_.x', 'search_path', 'replication']), r.text(r.int(20))]] : []),
        ].filter(() => r.chance(0.95)),
      ),
      r.chance(0.9) ? V3 : r.pick([V3 + 2, V3 + 99, 2 * 65536, 4 * 65536]),
    );
  const first = (): Buffer => {
    switch (r.int(12)) {
      case 0:
        return sslRequest();
      case 1:
        return gssencRequest();
      case 2:
        return cancelRequest(r.u32() | 0, r.bytes(r.pick([4, 32, 3, 300])));
      case 3: // direct TLS: a TLS handshake record header and garbage
        return Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), r.bytes(2 + r.int(200))]);
      case 4:
        return r.bytes(1 + r.int(64));
      default:
        return startup();
    }
  };
  const follow = (): Buffer => {
    switch (r.int(16)) {
      case 0:
        return msg('p', cstr(`md5${r.bytes(16).toString('hex')}`));
      case 1:
        return msg('p', cstr(r.text(r.int(30))));
      case 2: {
        const data = Buffer.from(`n,,n=,r=${r.bytes(18).toString('base64')}`);
        return msg('p', cstr('SCRAM-SHA-256'), int32(data.length), data);
      }
      case 3:
        return msg('p', `c=biws,r=${r.bytes(30).toString('base64')},p=${r.bytes(32).toString('base64')}`);
      case 4:
        return msg('Q', cstr(r.pick(['SELECT 1', 'SELECT $1', '', 'SHOW POOLS', 'SHOW HELP', 'SET x = 1', 'BEGIN', 'COMMIT'])));
      case 5:
        return Buffer.concat([msg('P', cstr(r.pick(['', 's1'])), cstr('SELECT 1'), [0, 0]), msg('B', cstr(''), cstr(r.pick(['', 's1'])), [0, 0, 0, 0, 0, 0]), msg('E', cstr(''), int32(0)), msg('S')]);
      case 6:
        return msg(r.pick(['D', 'C']), 'S', cstr(r.pick(['', 's1', 'PGPOOL_1'])));
      case 7:
        return msg('H');
      case 8:
        return msg('X');
      case 9:
        return msg(r.pick(['d', 'c', 'f']), r.bytes(r.int(30)));
      case 10:
        return msg(String.fromCharCode(r.pick([0, 0x7a, 0x01, 0xff, 0x61])), r.bytes(r.int(20)));
      case 11:
        return msg('F', int32(r.u32() | 0), r.bytes(r.int(10)));
      case 12:
        return first();
      default:
        return msg('Q', cstr('SELECT 1'));
    }
  };
  const packets = [first()];
  const n = r.int(6);
  for (let i = 0; i < n; i++) packets.push(follow());
  if (r.chance(0.5)) {
    const i = r.int(packets.length);
    packets[i] = mutate(r, packets[i]!, [int32(80877103), cstr('user'), Buffer.from([0x16, 0x03])]);
  }
  let stream: Buffer = Buffer.concat(packets);
  if (r.chance(0.1)) stream = mutate(r, stream);
  if (r.chance(0.1)) stream = stream.subarray(0, r.int(stream.length + 1));
  const roll = r.int(100);
  return { seed, chunks: chunkStream(r, stream), finish: roll < 2 ? 'silent' : roll < 12 ? 'reset' : 'end' };
}

interface Outcome {
  /** The pooler closed the connection (or, for 'end'/'reset', the connection ended) in time. */
  ended: boolean;
  error: boolean;
  loggedIn: boolean;
  /** 'S' or 'N' answered first. */
  sslAnswer: boolean;
}

const READY = Buffer.from([0x5a, 0, 0, 0, 5]);
const ERROR_RX = /E\0\0..S(?:ERROR|FATAL)/s;

async function runHostileCase(port: number, c: HostileCase): Promise<Outcome> {
  const sock = net.connect({ host: '127.0.0.1', port });
  sock.setNoDelay(true);
  let got = Buffer.alloc(0);
  let closed = false;
  let onReady: () => void = () => undefined;
  const readyP = new Promise<void>((resolve) => (onReady = resolve));
  sock.on('data', (b: Buffer) => {
    if (got.length < 64 * 1024) got = Buffer.concat([got, b]);
    if (got.includes(READY)) onReady();
  });
  sock.on('error', () => undefined);
  const closedP = new Promise<void>((resolve) => sock.once('close', () => ((closed = true), resolve())));
  await Promise.race([new Promise<void>((resolve) => sock.once('connect', () => resolve())), closedP, sleep(10_000)]);
  for (const chunk of c.chunks) {
    if (closed || sock.destroyed) break;
    sock.write(chunk);
    if (c.chunks.length > 1) await new Promise((resolve) => setImmediate(resolve));
  }
  // Give the pooler a moment to answer what it has, then end our side (unless the case stays
  // silent and is not logged in: then client_login_timeout must close it).
  await Promise.race([closedP, sleep(5)]);
  let waitMs = 3_000 + SLACK_MS;
  if (!closed && c.finish === 'silent' && !got.includes(READY)) {
    // Not logged in: client_login_timeout must close it. Unless the login completes meanwhile
    // (a server login under load takes longer than the look above): a silent client that is
    // logged in is an ordinary idle one, and is ended like the others.
    const loginLimit = LOGIN_TIMEOUT_S * 1000 + 2 * SLACK_MS;
    const startedWaiting = Date.now();
    await Promise.race([closedP, readyP, sleep(loginLimit)]);
    waitMs = Math.max(0, loginLimit - (Date.now() - startedWaiting));
  }
  if (!closed && (c.finish !== 'silent' || got.includes(READY))) {
    waitMs = 3_000 + SLACK_MS;
    if (c.finish === 'reset') sock.resetAndDestroy();
    else sock.end();
  }
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([closedP.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), waitMs)))]);
  clearTimeout(timer);
  sock.destroy();
  return { ended, error: ERROR_RX.test(got.toString('latin1')), loggedIn: got.includes(READY), sslAnswer: got[0] === 0x53 || got[0] === 0x4e };
}

// ------------------------------------------------------------------------------------------------

describe('hostile input against a live pooler', () => {
  let cluster: Cluster | undefined;
  let pki: Pki;
  let hbaFile: string;
  const poolers: Pooler[] = [];
  let failed = false;
  let main: Pooler | undefined;
  const c = (): Cluster => {
    assert.ok(cluster, 'cluster did not start');
    return cluster;
  };
  const m = (): Pooler => {
    assert.ok(main, 'pooler did not start');
    return main;
  };

  const userlist = (): Record<string, string> => ({
    [USERS.trust.name]: '',
    [USERS.md5.name]: USERS.md5.password,
    [USERS.scram.name]: scramSecret(USERS.scram.password),
    [ADMIN.name]: ADMIN.password,
    [STATS.name]: STATS.password,
    [NOBODY.name]: NOBODY.password,
  });

  function ini(extra: Record<string, string> = {}): IniSections {
    return {
      pgbouncer: {
        auth_type: 'hba',
        auth_hba_file: hbaFile,
        pool_mode: 'transaction',
        default_pool_size: '4',
        max_client_conn: '20000',
        // PgBouncer's default of 128 makes a burst of connects wait for SYN retransmits.
        listen_backlog: '4096',
        client_login_timeout: String(LOGIN_TIMEOUT_S),
        client_idle_timeout: String(IDLE_TIMEOUT_S),
        admin_users: ADMIN.name,
        stats_users: STATS.name,
        client_tls_sslmode: 'allow',
        client_tls_key_file: pki.server.key,
        client_tls_cert_file: pki.server.chain,
        ...extra,
      },
      databases: {
        p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
        p1: `host=127.0.0.1 port=${c().port} dbname=p1`,
      },
    };
  }

  async function pooler(extra: Record<string, string> = {}): Promise<Pooler> {
    const p = await startPooler(ini(extra), { userlist: userlist() });
    poolers.push(p);
    return p;
  }

  /** The pooler process is still running and serves a normal client. */
  async function assertHealthy(p: Pooler, why: string): Promise<void> {
    const exited = await Promise.race([p.exited.then(() => true), sleep(50).then(() => false)]);
    const fatal = p.logs().filter((l) => / FATAL |uncaught/.test(l));
    assert.equal(exited, false, `the pooler died (${why}):\n${fatal.join('\n')}`);
    assert.deepEqual(await pgQuery(p.port, 'SELECT 1 AS x'), [{ x: 1 }], `a normal client after ${why}`);
  }

  before(async () => {
    cluster = await startCluster({ ssl: true, name: 'hostile' });
    assert.ok(cluster.pki);
    pki = cluster.pki;
    hbaFile = `${cluster.dataDir}/../pooler-hba.conf`;
    fs.writeFileSync(
      hbaFile,
      `host all ${USERS.trust.name} 127.0.0.1/32 trust
host pgbouncer ${STATS.name} 127.0.0.1/32 trust
host all ${USERS.scram.name} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 md5
`,
    );
    await cluster.query('CREATE TABLE hostile_copy (a int, b text); GRANT ALL ON hostile_copy TO PUBLIC', 'p0');
    main = await pooler();
  });
  afterEach((t) => {
    if ('passed' in t && !t.passed) failed = true;
  });
  after(async () => {
    if (failed) {
      for (const p of poolers) console.error(`--- pooler ${p.port} ---\n${p.logs().slice(-80).join('\n')}`);
    }
    await Promise.all(poolers.map((p) => p.stop()));
    await cluster?.destroy();
  });

  // ----------------------------------------------------------------------------------------------
  // Whole-connection fuzzing

  // 2 000 in CI (a few seconds); `npm run fuzz` runs this test alone with 10 000.
  const total = Number(process.env.PGPOOL_HOSTILE_CONNECTIONS ?? 2_000);
  it(`${total} generated hostile connections (concurrency 50) each end in an error or a close; then a normal client works and RSS is back near baseline`, async () => {
    const p = await pooler();
    const seed = Number(process.env.PGPOOL_FUZZ_SEED ?? (Date.now() >>> 0));
    // Warm up before the baseline: JIT, pools, the TLS context, and a V8 heap grown to its working
    // size (it is not given back to the OS afterwards, so a cold baseline would count it as growth).
    for (let i = 0; i < 20; i++) await pgQuery(p.port, 'SELECT 1');
    await pool(Array.from({ length: 500 }, (_, i) => i), 50, async (i) => {
      await runHostileCase(p.port, generateCase((seed ^ 0x5bd1e995) + i));
    });
    await sleep(1_000);
    const baseline = rssMb(p.pid);
    const cases = Array.from({ length: total }, (_, i) => i);
    const hangs: HostileCase[] = [];
    const tally = { error: 0, closeOnly: 0, loggedIn: 0, sslAnswer: 0, silent: 0 };
    const t0 = Date.now();
    await pool(cases, 50, async (i) => {
      const hc = generateCase((seed + Math.imul(i, 0x9e3779b1)) >>> 0);
      const o = await runHostileCase(p.port, hc);
      if (!o.ended) hangs.push(hc);
      if (o.error) tally.error++;
      else tally.closeOnly++;
      if (o.loggedIn) tally.loggedIn++;
      if (o.sslAnswer) tally.sslAnswer++;
      if (hc.finish === 'silent') tally.silent++;
    });
    const secs = (Date.now() - t0) / 1000;
    await sleep(1_000);
    await assertHealthy(p, `${total} hostile connections (seed ${seed})`);
    const rss = rssMb(p.pid);
    console.log(
      `hostile: ${total} connections in ${secs.toFixed(1)} s, seed ${seed}: ${tally.error} answered with an ErrorResponse, ${tally.closeOnly} closed without one, ` +
        `${tally.loggedIn} got as far as ReadyForQuery, ${tally.sslAnswer} got S/N, ${tally.silent} went silent; RSS ${baseline.toFixed(0)} → ${rss.toFixed(0)} MB`,
    );
    assert.equal(hangs.length, 0, `${hangs.length} connection(s) neither answered nor closed; first seeds: ${hangs.slice(0, 5).map((h) => `${h.seed} (${h.finish}, ${h.chunks.map((x) => x.toString('hex').slice(0, 80)).join('|')})`).join('; ')}`);
    assert.ok(rss < baseline + 50, `RSS ${rss.toFixed(0)} MB after the run, baseline ${baseline.toFixed(0)} MB`);
  });

  // ----------------------------------------------------------------------------------------------
  // The startup packet

  /** Send `bytes` as the whole first packet; the pooler must answer an ErrorResponse and close. */
  async function refusedAtStartup(bytes: Buffer, code: string, message: RegExp): Promise<void> {
    const raw = await RawConn.connect(m().port);
    try {
      raw.send(bytes);
      const e = await raw.errorResponse(5_000);
      assert.ok(e !== null, 'closed without an ErrorResponse');
      assert.equal(e.C, code, JSON.stringify(e));
      assert.match(e.M ?? '', message);
      assert.ok(await raw.closesWithin(2_000), 'still open after the error');
    } finally {
      raw.destroy();
    }
  }

  it('a startup packet of 10 000 parameters is refused (08P01) and closed; 1 001 small ones too', async () => {
    const many = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`param_${i}`, 'value']));
    await refusedAtStartup(startupPacket({ user: USERS.trust.name, database: 'p0', ...many }), '08P01', /length|startup/);
    // Fewer bytes than the startup-packet limit, more parameters than the count limit.
    const small = Object.fromEntries(Array.from({ length: 1_001 }, (_, i) => [`p${i}`, 'v']));
    await refusedAtStartup(startupPacket({ user: USERS.trust.name, ...small }), '08P01', /too many startup parameters/);
    await assertHealthy(m(), 'huge startup packets');
  });

  it('a 1 MB user name is refused (08P01) before the pooler reads it', async () => {
    const t0 = Date.now();
    await refusedAtStartup(startupPacket({ user: 'u'.repeat(1 << 20), database: 'p0' }), '08P01', /length/);
    assert.ok(Date.now() - t0 < 3_000, 'the 1 MB name was waited for');
    await assertHealthy(m(), 'a 1 MB user name');
  });

  it('a startup packet without a user is refused (28000)', async () => {
    await refusedAtStartup(startupPacket({ database: 'p0' }), '28000', /no PostgreSQL user name/);
    await refusedAtStartup(startupPacket({ user: '', database: 'p0' }), '28000', /no PostgreSQL user name/);
  });

  it('non-UTF-8 bytes in a startup parameter name or value are refused (08P01)', async () => {
    const bad = Buffer.from([0xff, 0xfe, 0xc3, 0x28]);
    await refusedAtStartup(untyped(int32(V3), cstr('user'), Buffer.concat([bad, Buffer.from([0])]), cstr('database'), cstr('p0'), [0]), '08P01', /UTF8/);
    await refusedAtStartup(untyped(int32(V3), cstr('user'), cstr(USERS.trust.name), Buffer.concat([Buffer.from('app'), bad, Buffer.from([0])]), cstr('x'), [0]), '08P01', /UTF8/);
  });

  for (const len of [0, 3, 4, 7, 0x7fffffff, -1, -0x80000000]) {
    it(`a startup packet length of ${len} is refused (08P01) and closed`, async () => {
      await refusedAtStartup(Buffer.concat([int32(len), int32(V3), cstr('user'), cstr(USERS.trust.name), Buffer.from([0])]), '08P01', /length/);
    });
  }

  // ----------------------------------------------------------------------------------------------
  // Typed messages during and after login

  for (const len of [0, 3, -1, 0x7fffffff, -0x80000000]) {
    it(`a PasswordMessage length of ${len} during authentication is refused (08P01) and closed`, async () => {
      const raw = await RawConn.connect(m().port);
      try {
        raw.send(startupPacket({ user: USERS.md5.name, database: 'p0' }));
        const req = await raw.next();
        assert.equal(req?.type, 'R');
        raw.send(Buffer.concat([Buffer.from('p'), int32(len), Buffer.from('junk')]));
        const e = await raw.errorResponse(3_000);
        assert.ok(e !== null, 'closed without an ErrorResponse');
        assert.equal(e.C, '08P01', JSON.stringify(e));
        assert.match(e.M ?? '', /length/);
        assert.ok(await raw.closesWithin(2_000));
      } finally {
        raw.destroy();
      }
    });
  }

  it('an empty PasswordMessage (length 4) fails authentication (28P01)', async () => {
    const raw = await RawConn.connect(m().port);
    try {
      raw.send(startupPacket({ user: USERS.md5.name, database: 'p0' }));
      assert.equal((await raw.next())?.type, 'R');
      raw.send(Buffer.concat([Buffer.from('p'), int32(4)]));
      const e = await raw.errorResponse(3_000);
      assert.equal(e?.C, '28P01', JSON.stringify(e));
    } finally {
      raw.destroy();
    }
  });

  it('a message other than a password during authentication is refused at once, not left to client_login_timeout', async () => {
    // PostgreSQL: FATAL 08P01 "expected password response, got message type 81".
    for (const bytes of [msg('Q', cstr('SELECT 1')), sslRequest(), msg('z', 'junk')]) {
      const raw = await RawConn.connect(m().port);
      try {
        raw.send(startupPacket({ user: USERS.md5.name, database: 'p0' }));
        assert.equal((await raw.next())?.type, 'R');
        const t0 = Date.now();
        raw.send(bytes);
        const e = await raw.errorResponse(LOGIN_TIMEOUT_S * 1000 + SLACK_MS);
        const ms = Date.now() - t0;
        assert.ok(e !== null, 'closed without an ErrorResponse');
        assert.doesNotMatch(e.M ?? '', /client_login_timeout/, `${bytes.toString('hex').slice(0, 40)} was ignored until the login timeout (${ms} ms)`);
        assert.equal(e.C, '08P01');
      } finally {
        raw.destroy();
      }
    }
  });

  for (const len of [0, 3, -1, -0x80000000]) {
    it(`a typed message length of ${len} after login is refused by the pooler (08P01) and closed`, async () => {
      const raw = await login(m().port);
      try {
        raw.send(Buffer.concat([Buffer.from('Q'), int32(len), Buffer.from('SELECT 1\0')]));
        const e = await raw.errorResponse(3_000);
        assert.ok(e !== null, 'closed without an ErrorResponse');
        assert.equal(e.C, '08P01', JSON.stringify(e));
        assert.ok(await raw.closesWithin(2_000));
      } finally {
        raw.destroy();
      }
      await assertHealthy(m(), `a length of ${len} after login`);
    });
  }

  for (const len of [4, 0x7fffffff]) {
    it(`a Query length of ${len} after login gets an ErrorResponse (from PostgreSQL) and no hang`, async () => {
      // 4 is a legal length for an empty body (PostgreSQL then finds no query string); 2^31-1 is
      // within max_packet_size, so PostgreSQL's own message limit refuses it.
      const raw = await login(m().port);
      try {
        raw.send(Buffer.concat([Buffer.from('Q'), int32(len)]));
        const e = await raw.errorResponse(5_000);
        assert.ok(e !== null, 'closed without an ErrorResponse');
        assert.match(e.C ?? '', /^08/, JSON.stringify(e));
      } finally {
        raw.destroy();
      }
      await assertHealthy(m(), `a Query length of ${len}`);
    });
  }

  it('an unknown message type after login is answered with an error (PostgreSQL\'s 08P01) and the pooler lives', async () => {
    const raw = await login(m().port);
    try {
      raw.send(msg('z', 'whatever'));
      const e = await raw.errorResponse(5_000);
      assert.ok(e !== null, 'closed without an ErrorResponse');
      assert.equal(e.C, '08P01', JSON.stringify(e));
      assert.match(e.M ?? '', /invalid frontend message type/);
      assert.ok(await raw.closesWithin(3_000));
    } finally {
      raw.destroy();
    }
    await assertHealthy(m(), 'an unknown message type');
  });

  it('an SSLRequest after login is refused (PostgreSQL reads it as message type 0) and the pooler lives', async () => {
    const raw = await login(m().port);
    try {
      raw.send(sslRequest());
      const e = await raw.errorResponse(5_000);
      assert.ok(e !== null, 'closed without an ErrorResponse');
      assert.equal(e.C, '08P01', JSON.stringify(e));
    } finally {
      raw.destroy();
    }
    await assertHealthy(m(), 'an SSLRequest after login');
  });

  // ----------------------------------------------------------------------------------------------
  // TLS at the wrong moment

  it('bytes sent after an SSLRequest before the TLS handshake are refused (CVE-2021-3935)', async () => {
    const raw = await RawConn.connect(m().port);
    try {
      raw.send(Buffer.concat([sslRequest(), startupPacket({ user: USERS.trust.name, database: 'p0' })]));
      const e = await raw.errorResponse(3_000);
      assert.ok(e !== null, 'closed without an ErrorResponse');
      assert.equal(e.C, '08P01');
      assert.match(e.M ?? '', /unencrypted data after SSL request/);
      assert.ok(await raw.closesWithin(2_000));
    } finally {
      raw.destroy();
    }
  });

  for (const [name, garbage, closeWithinMs] of [
    ['random bytes', randomBytes(300), 3_000],
    ['a plaintext startup packet', startupPacket({ user: USERS.trust.name, database: 'p0' }), 3_000],
    // A handshake record announcing 64 KB that never comes: the login timeout ends it.
    ['a TLS record header promising 64 KB', Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01]), LOGIN_TIMEOUT_S * 1000 + 2 * SLACK_MS],
  ] as const) {
    it(`TLS garbage after 'S' (${name}) closes the connection; the pooler lives`, async () => {
      const raw = await RawConn.connect(m().port);
      try {
        raw.send(sslRequest());
        assert.equal(await raw.byte(), 0x53, "expected 'S'");
        raw.send(garbage);
        assert.ok(await raw.closesWithin(closeWithinMs), `still open ${closeWithinMs} ms after ${name}`);
      } finally {
        raw.destroy();
      }
      await assertHealthy(m(), `TLS garbage (${name})`);
    });
  }

  it('direct TLS (first byte 0x16) with garbage closes the connection; the pooler lives', async () => {
    const raw = await RawConn.connect(m().port);
    try {
      raw.send(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x20]), randomBytes(32)]));
      assert.ok(await raw.closesWithin(3_000));
    } finally {
      raw.destroy();
    }
    await assertHealthy(m(), 'direct TLS garbage');
  });

  it('an SSLRequest inside TLS is refused (closed), as PostgreSQL does', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: m().port });
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.write(sslRequest());
    const answer = await new Promise<Buffer>((resolve) => sock.once('data', resolve));
    assert.equal(answer[0], 0x53);
    const secure = tls.connect({ socket: sock, rejectUnauthorized: false });
    secure.on('error', () => undefined);
    await new Promise<void>((resolve) => secure.once('secureConnect', resolve));
    const closed = new Promise<boolean>((resolve) => secure.once('close', () => resolve(true)));
    secure.write(sslRequest());
    const ok = await Promise.race([closed, sleep(3_000).then(() => false)]);
    secure.destroy();
    assert.ok(ok, 'an SSLRequest inside TLS was not refused');
  });

  // ----------------------------------------------------------------------------------------------
  // Slowloris

  it('half a startup packet, or half a PasswordMessage, is closed by client_login_timeout', async () => {
    const halfStartup = await RawConn.connect(m().port);
    const halfPassword = await RawConn.connect(m().port);
    try {
      halfStartup.send(startupPacket({ user: USERS.trust.name, database: 'p0' }).subarray(0, 9));
      halfPassword.send(startupPacket({ user: USERS.md5.name, database: 'p0' }));
      assert.equal((await halfPassword.next())?.type, 'R');
      halfPassword.send(msg('p', cstr('md5' + '0'.repeat(32))).subarray(0, 12));
      const t0 = Date.now();
      const [a, b] = await Promise.all([halfStartup.errorResponse(LOGIN_TIMEOUT_S * 1000 + SLACK_MS), halfPassword.errorResponse(LOGIN_TIMEOUT_S * 1000 + SLACK_MS)]);
      assert.match(a?.M ?? '', /client_login_timeout/);
      assert.match(b?.M ?? '', /client_login_timeout/);
      assert.ok(await halfStartup.closesWithin(1_000));
      assert.ok(await halfPassword.closesWithin(1_000));
      assert.ok(Date.now() - t0 <= LOGIN_TIMEOUT_S * 1000 + SLACK_MS);
    } finally {
      halfStartup.destroy();
      halfPassword.destroy();
    }
  });

  it('after login, an idle client is closed by client_idle_timeout', async () => {
    const raw = await login(m().port);
    try {
      await rawQuery(raw, 'SELECT 1');
      const e = await raw.errorResponse(IDLE_TIMEOUT_S * 1000 + SLACK_MS);
      assert.equal(e?.C, '57P05', JSON.stringify(e));
    } finally {
      raw.destroy();
    }
  });

  it('after login, half a message that stalls is closed by client_idle_timeout (and does not hold a server)', async () => {
    // Transaction mode: the half-sent Query links a server; without a timeout for it, a few such
    // clients hold every server of the pool.
    const raw = await login(m().port);
    try {
      raw.send(msg('Q', cstr('SELECT 1')).subarray(0, 8));
      const t0 = Date.now();
      const closed = await raw.closesWithin(IDLE_TIMEOUT_S * 1000 + 2 * SLACK_MS);
      assert.ok(closed, `a client stalled in the middle of a Query was still connected after ${Date.now() - t0} ms (client_idle_timeout=${IDLE_TIMEOUT_S} s)`);
    } finally {
      raw.destroy();
    }
  });

  it('5 000 connections that never speak are all closed by client_login_timeout while a normal client keeps being served', async () => {
    // Each silent connection holds one fd here and one in the pooler (a child process, same limit).
    const limit = fdLimit();
    const count = Math.min(5_000, limit - 500);
    if (count < 5_000) console.log(`hostile: open-files limit is ${limit}: using ${count} silent connections instead of 5 000 (raise it with ulimit -n to run all)`);
    assert.ok(count >= 500, `open-files limit ${limit} is too low for this test`);
    const socks: net.Socket[] = [];
    const closedAt: number[] = [];
    const openedAt: number[] = [];
    const served: number[] = [];
    let stop = false;
    // The normal client: a fresh connection and a query every 200 ms throughout.
    const normal = (async () => {
      while (!stop) {
        const t = Date.now();
        assert.deepEqual(await pgQuery(m().port, 'SELECT 1 AS x'), [{ x: 1 }]);
        served.push(Date.now() - t);
        await sleep(200);
      }
    })().then(() => null, (e: Error) => e);
    try {
      for (let i = 0; i < count; i += 250) {
        await Promise.all(
          Array.from({ length: Math.min(250, count - i) }, () =>
            new Promise<void>((resolve, reject) => {
              const s = net.connect({ host: '127.0.0.1', port: m().port });
              s.on('error', () => undefined);
              // Read (and drop) the pooler's error, or its FIN would never be seen.
              s.on('data', () => undefined);
              s.once('connect', () => {
                openedAt.push(Date.now());
                resolve();
              });
              s.once('close', () => closedAt.push(Date.now()));
              setTimeout(() => reject(new Error('connect timed out')), 10_000).unref();
              socks.push(s);
            }),
          ),
        );
      }
      const lastOpened = Math.max(...openedAt);
      console.log(`hostile: ${count} silent connections opened in ${lastOpened - Math.min(...openedAt)} ms`);
      const deadline = lastOpened + LOGIN_TIMEOUT_S * 1000 + 3 * SLACK_MS;
      while (closedAt.length < count && Date.now() < deadline) await sleep(100);
      assert.equal(closedAt.length, count, `${count - closedAt.length} of ${count} silent connections still open ${LOGIN_TIMEOUT_S} s + ${3 * SLACK_MS} ms after the last one opened`);
      stop = true;
      const failure = await normal;
      assert.equal(failure, null, `the normal client failed during the silent connections: ${failure?.message}`);
      assert.ok(served.length >= 3, `the normal client was served only ${served.length} times`);
      console.log(`hostile: ${count} silent connections closed by client_login_timeout; the normal client was served ${served.length} times (slowest ${Math.max(...served)} ms)`);
    } finally {
      stop = true;
      await normal;
      for (const s of socks) s.destroy();
    }
    await assertHealthy(m(), 'silent connections');
  });

  it('clients that ignore the close (half-open) after client_login_timeout do not keep the pooler\'s file descriptors', async () => {
    // The pooler sends its error and a FIN; a hostile client never closes its own side. Unless the
    // pooler then destroys the socket, each such connection holds a descriptor forever, outside
    // max_client_conn (the client is already gone from the pooler's lists).
    const p = await pooler();
    const fds = () => fs.readdirSync(`/proc/${p.pid}/fd`).length;
    const baseline = fds();
    const socks: net.Socket[] = [];
    try {
      for (let i = 0; i < 300; i++) {
        const s = net.connect({ host: '127.0.0.1', port: p.port, allowHalfOpen: true });
        s.on('error', () => undefined);
        s.on('data', () => undefined);
        socks.push(s);
      }
      const waitMs = LOGIN_TIMEOUT_S * 1000 + 2 * SLACK_MS + 2_000;
      const deadline = Date.now() + waitMs;
      while (fds() - baseline >= 20 && Date.now() < deadline) await sleep(200);
      const held = fds() - baseline;
      assert.ok(held < 20, `${held} descriptors still held by the pooler ${waitMs} ms after 300 half-open clients connected (client_login_timeout ${LOGIN_TIMEOUT_S} s)`);
    } finally {
      for (const s of socks) s.destroy();
      await p.stop();
    }
  });

  it('unauthenticated logins to random database names (a `*` database, auth_user) do not leave pools behind', async () => {
    // With auth_user, the secret of a user missing from the auth_file is looked up in the database
    // the client named, before the client proves anything; through `*` that creates a pool per name.
    // autodb_idle_timeout (PgBouncer: drop auto-created databases unused that long) bounds them.
    const p = await startPooler(
      {
        pgbouncer: { auth_type: 'md5', auth_user: 'postgres', admin_users: ADMIN.name, pool_mode: 'transaction', autodb_idle_timeout: '1' },
        databases: { '*': `host=127.0.0.1 port=${c().port}` },
      },
      { userlist: { postgres: '', [ADMIN.name]: ADMIN.password } },
    );
    poolers.push(p);
    try {
      await pool(Array.from({ length: 500 }, (_, i) => i), 50, async (i) => {
        const raw = await RawConn.connect(p.port);
        raw.send(startupPacket({ user: `nobody_${i}`, database: `nodb_${i}_${randomBytes(4).toString('hex')}` }));
        await raw.next(5_000).catch(() => null);
        raw.destroy();
      });
      const admin = await loginMd5(p.port, ADMIN.name, ADMIN.password, 'pgbouncer');
      try {
        const deadline = Date.now() + 1_000 + 2 * SLACK_MS;
        let pools = Infinity;
        while (pools > 5 && Date.now() < deadline) {
          pools = (await rawQuery(admin, 'SHOW POOLS')).filter((x) => x.type === 'D').length;
          if (pools > 5) await sleep(200);
        }
        assert.ok(pools <= 5, `${pools} pools left by 500 failed logins to random database names, autodb_idle_timeout = 1 s`);
      } finally {
        admin.destroy();
      }
    } finally {
      await p.stop();
    }
  });

  // ----------------------------------------------------------------------------------------------
  // Cancel flood, Terminate in COPY

  it('a flood of CancelRequests with random keys cancels nothing and the pooler stays healthy', async () => {
    const longQuery = pgQuery(m().port, 'SELECT pg_sleep(1.5) AS slept').then((rows) => rows, (e: Error) => e);
    await sleep(200);
    const keys = Array.from({ length: 2_000 }, () => ({ pid: randomBytes(4).readInt32BE(0), secret: randomBytes(randomBytes(1)[0]! % 2 === 0 ? 4 : 32) }));
    let closedByPooler = 0;
    await pool(keys, 50, async (k) => {
      const raw = await RawConn.connect(m().port);
      raw.send(cancelRequest(k.pid, k.secret));
      if (await raw.closesWithin(3_000)) closedByPooler++;
      raw.destroy();
    });
    assert.equal(closedByPooler, keys.length, 'every cancel connection is closed by the pooler');
    // The running query was not cancelled by any random key.
    assert.deepEqual(await longQuery, [{ slept: '' }]);
    await assertHealthy(m(), 'a cancel flood');
  });

  it('a Terminate in the middle of COPY FROM STDIN aborts the COPY and never hands that server to another client', async () => {
    const p = await pooler({ default_pool_size: '1' });
    const raw = await login(p.port);
    raw.send(msg('Q', cstr('COPY hostile_copy FROM STDIN')));
    const seen = await raw.until('G');
    assert.equal(seen.at(-1)?.type, 'G');
    raw.send(Buffer.concat([msg('d', '1\tone\n'), msg('d', '2\ttwo\n'), msg('X')]));
    assert.ok(await raw.closesWithin(3_000), 'the client was not closed after its Terminate');
    raw.destroy();
    // The one server of the pool: the next clients must find it clean (or a new one).
    for (let i = 0; i < 5; i++) assert.deepEqual(await pgQuery(p.port, 'SELECT count(*)::int AS n FROM hostile_copy'), [{ n: 0 }]);
    const direct = await c().query<{ n: number }>('SELECT count(*)::int AS n FROM hostile_copy', 'p0');
    assert.equal(direct.rows[0]?.n, 0, 'rows of the aborted COPY were committed');
    await assertHealthy(p, 'a Terminate inside COPY');
    await p.stop();
  });

  // ----------------------------------------------------------------------------------------------
  // Framing and buffering bugs found by the fuzzer

  it('a Query whose header is split across TCP segments is answered (transaction mode with prepared statements)', async () => {
    const p = await pooler();
    for (const cut of [1, 2, 3, 4, 5, 7]) {
      const raw = await login(p.port);
      try {
        const q = msg('Q', cstr('SELECT 42'));
        raw.send(q.subarray(0, cut));
        await sleep(50);
        raw.send(q.subarray(cut));
        const seen: BackendMessage[] = [];
        for (;;) {
          const mm = await raw.next(3_000);
          assert.ok(mm !== null, `connection closed after a Query split at byte ${cut}; pooler: ${p.logs().filter((l) => /fatal/.test(l)).join('\n')}`);
          seen.push(mm);
          if (mm.type === 'Z') break;
        }
        assert.equal(seen.find((x) => x.type === 'D')?.body.toString('utf8', 6), '42', `split at byte ${cut}`);
      } finally {
        raw.destroy();
      }
    }
    await assertHealthy(p, 'split Query headers');
    await p.stop();
  });

  it('an authenticated client waiting for a server cannot make the pooler buffer its input without limit', async () => {
    const p = await pooler({ pool_mode: 'session', default_pool_size: '1', query_wait_timeout: '30', client_login_timeout: '30' });
    const holder = await login(p.port);
    await rawQuery(holder, 'BEGIN');
    const waiter = await RawConn.connect(p.port);
    try {
      const before = rssMb(p.pid);
      waiter.send(startupPacket({ user: USERS.trust.name, database: 'p0' }));
      const ok = await waiter.next();
      assert.equal(ok?.type, 'R', 'AuthenticationOk first');
      // Up to 300 MB of queries for 3 s; a pooler that stops reading makes the writes block.
      const q = msg('Q', cstr(`SELECT '${'x'.repeat(1 << 20)}'`));
      let sent = 0;
      const t0 = Date.now();
      while (sent < 300 * 2 ** 20 && Date.now() - t0 < 3_000 && !waiter.closed) {
        if (!waiter.sock.write(q)) await drainedWithin(waiter.sock, 200);
        sent += q.length;
      }
      // The pooler stops reading, so 'drain' rarely comes: the waits must not pile up listeners.
      assert.equal(waiter.sock.listenerCount('drain'), 0);
      await sleep(300);
      const grown = rssMb(p.pid) - before;
      assert.ok(grown < 100, `the pooler grew by ${grown.toFixed(0)} MB while a waiting client sent ${(sent / 2 ** 20).toFixed(0)} MB`);
    } finally {
      waiter.destroy();
      holder.destroy();
    }
    await p.stop();
  });

  it('a server that sends a malformed BackendKeyData or an ErrorResponse without SQLSTATE does not take the pooler down', async () => {
    for (const reply of [
      msg('E', 'SFATAL\0', 'Mno sqlstate here\0', [0]), // CVE-2026-6666's shape
      msg('E', [0]), // no fields at all
      msg('R', [0, 0]), // Authentication request of 2 bytes
      Buffer.concat([msg('R', int32(0)), msg('K', [1, 2])]), // BackendKeyData of 2 bytes
    ]) {
      const fake = net.createServer((s) => {
        s.on('error', () => undefined);
        let n = 0;
        s.on('data', (d: Buffer) => {
          // server_tls_sslmode defaults to prefer: answer the SSLRequest with N first.
          if (n++ === 0 && d.length === 8) s.write('N');
          else s.end(reply);
        });
      });
      await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
      const port = (fake.address() as net.AddressInfo).port;
      const p = await startPooler({ pgbouncer: { auth_type: 'trust', pool_mode: 'session' }, databases: { p0: `host=127.0.0.1 port=${port} dbname=p0` } }, { userlist: { u: '' } });
      poolers.push(p);
      try {
        await assert.rejects(pgQuery(p.port, 'SELECT 1', 'u'), `reply ${reply.toString('hex')}`);
        await sleep(200);
        const exited = await Promise.race([p.exited.then(() => true), sleep(50).then(() => false)]);
        assert.equal(exited, false, `the pooler died on server reply ${reply.toString('hex')}:\n${p.logs().filter((l) => /fatal/.test(l)).join('\n')}`);
      } finally {
        await p.stop();
        await new Promise((r) => fake.close(r));
      }
    }
  });

  // ----------------------------------------------------------------------------------------------
  // The admin console

  describe('admin console', () => {
    /** A console session as the stats user (trust by hba) or the admin (md5). */
    const consoleAs = (who: 'stats' | 'admin', port = m().port) => (who === 'stats' ? login(port, STATS.name, 'pgbouncer') : loginMd5(port, ADMIN.name, ADMIN.password, 'pgbouncer'));

    async function expectError(raw: RawConn, sql: string, code: string): Promise<void> {
      const seen = await rawQuery(raw, sql);
      const e = seen.find((x) => x.type === 'E');
      assert.ok(e, `no error for ${JSON.stringify(sql.slice(0, 60))}; saw ${seen.map((x) => x.type).join('')}`);
      assert.equal(errorFields(e.body).C, code, `${sql.slice(0, 60)}: ${JSON.stringify(errorFields(e.body))}`);
    }

    async function stillUsable(raw: RawConn): Promise<void> {
      const seen = await rawQuery(raw, 'SHOW VERSION');
      assert.ok(seen.some((x) => x.type === 'D'), 'SHOW VERSION after the errors');
    }

    it('answers bad SQL and unknown commands with errors and keeps the session usable', async () => {
      const raw = await consoleAs('admin');
      try {
        for (const sql of ['SELEC 1', 'SHOW', 'SHOW NOSUCH', 'SHOW "unterminated', 'SET', 'SET x', 'SET x = ', 'FROBNICATE', 'KILL_CLIENTS 1', 'SELECT * FROM pg_authid', 'SHOW POOLS; SHOW POOLS', 'é'.repeat(10_000), `SHOW ${'x'.repeat(100_000)}`]) {
          await expectError(raw, sql, '42601');
        }
        // Known commands with bad arguments.
        await expectError(raw, 'KILL_CLIENT abc', '08P01');
        await expectError(raw, 'KILL_CLIENT 999999999', '08P01');
        await expectError(raw, 'PAUSE nosuchdb', '3D000');
        await expectError(raw, 'SET nosuch = 1', '22023');
        await expectError(raw, "SET default_pool_size = 'lots'", '22023');
        await stillUsable(raw);
        // The extended protocol is refused with one error per batch; the session goes on after Sync.
        raw.send(Buffer.concat([msg('P', cstr(''), cstr('SHOW POOLS'), [0, 0]), msg('B', cstr(''), cstr(''), [0, 0, 0, 0, 0, 0]), msg('E', cstr(''), int32(0)), msg('S')]));
        const seen = await raw.until('Z', { onError: 'keep' });
        assert.equal(seen.filter((x) => x.type === 'E').length, 1);
        await stillUsable(raw);
      } finally {
        raw.destroy();
      }
    });

    it('refuses every control command and SET from a stats user (42501) and keeps the session usable', async () => {
      const raw = await consoleAs('stats');
      try {
        for (const sql of ['PAUSE', 'PAUSE p0', 'RESUME', 'DISABLE p0', 'ENABLE p0', 'KILL p0', 'KILL', 'KILL_CLIENT 1', 'RECONNECT', 'RELOAD', 'SUSPEND', 'WAIT_CLOSE', 'SHUTDOWN', 'SHUTDOWN WAIT_FOR_CLIENTS', 'SET default_pool_size = 1', 'SHOW FDS']) {
          await expectError(raw, sql, '42501');
        }
        await stillUsable(raw);
      } finally {
        raw.destroy();
      }
      // Nothing was paused, disabled or shut down.
      await assertHealthy(m(), 'refused control commands');
    });

    it('refuses a console login from a user that is neither admin nor stats user', async () => {
      const { conn: raw } = await md5Start(m().port, NOBODY.name, NOBODY.password, 'pgbouncer');
      try {
        const e = await raw.errorResponse();
        assert.equal(e?.C, '28000', JSON.stringify(e));
        assert.match(e?.M ?? '', /not allowed/);
      } finally {
        raw.destroy();
      }
    });

    it('answers (or closes) a message type it does not know instead of leaving the client waiting', async () => {
      const raw = await consoleAs('stats');
      try {
        raw.send(msg('z', 'junk'));
        // Within 1 s: client_idle_timeout (2 s) would otherwise end it and look like an answer.
        const e = await raw.errorResponse(1_000).catch(() => undefined);
        assert.ok(e !== undefined, 'no answer and no close within 1 s for an unknown message type');
        assert.doesNotMatch(e?.M ?? '', /client_idle_timeout/);
      } finally {
        raw.destroy();
      }
    });

    it('answers a SET with 40 000 blanks quickly (no catastrophic regex backtracking)', async () => {
      // Any console user can send this (everyone, with auth_type=any); the pooler's one thread is
      // blocked while the regular expression runs. A linear match takes a few milliseconds at most;
      // the quadratic one ~1.5 s once V8 has compiled the expression, ~10 s before.
      const raw = await consoleAs('stats');
      try {
        const t0 = Date.now();
        const seen = await rawQuery(raw, `SET a${' '.repeat(40_000)}x`, 60_000);
        const ms = Date.now() - t0;
        assert.equal(errorFields(seen.find((x) => x.type === 'E')?.body ?? Buffer.alloc(0)).C, '42601');
        assert.ok(ms < 500, `the console took ${ms} ms to refuse one 40 kB command (the whole pooler is blocked meanwhile)`);
      } finally {
        raw.destroy();
      }
    });

    it('a console client that pipelines queries without reading the answers does not grow the pooler without limit', async () => {
      // A fresh pooler: one whose heap already grew in other tests would absorb the growth.
      const p = await pooler();
      const raw = await consoleAs('stats', p.port);
      try {
        const before = rssMb(p.pid);
        raw.sock.pause();
        const batch = Buffer.concat(Array.from({ length: 10_000 }, () => msg('Q', cstr('SHOW HELP'))));
        for (let i = 0; i < 20; i++) {
          if (!raw.sock.write(batch)) await drainedWithin(raw.sock, 300);
        }
        assert.equal(raw.sock.listenerCount('drain'), 0);
        await sleep(1_000);
        const grown = rssMb(p.pid) - before;
        assert.ok(grown < 50, `the pooler grew by ${grown.toFixed(0)} MB buffering console answers nobody reads`);
      } finally {
        raw.destroy();
        await p.stop();
      }
    });
  });
});
