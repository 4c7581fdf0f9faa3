// Protocol 3.2 (PostgreSQL 18) end to end (issue 6), with hand-built protocol bytes on the client
// side (no libpq 18 client is available here) and a sniffing TCP proxy between the pooler and
// PostgreSQL to see what the pooler and the server say to each other.
//
// Client side: a 3.2 client gets no NegotiateProtocolVersion and a pooler-minted BackendKeyData
// with a 32-byte secret, and a CancelRequest carrying that long key cancels its query; a 3.0
// client keeps a 4-byte secret; a client asking for 3.5 is offered 3.2, and unknown `_pq_.`
// options are listed, in a NegotiateProtocolVersion laid out as PostgreSQL's.
// Server side: against PostgreSQL 18 the pooler logs in with 3.2 and gets 32-byte keys; against
// PostgreSQL 15 (when /usr/lib/postgresql/15/bin exists) the server negotiates down to 3.0 and
// the pooler carries on with 4-byte keys; cancels work both ways, whatever the client's version.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { cstr, msg } from '../support/bytes.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { errorFields, RawConn, sendCancelRequest, type BackendMessage } from '../support/raw-client.js';
import { dumpLogsOnFailure, required } from '../support/suite.js';

const USER = USERS.trust.name;
const PG15_BIN = '/usr/lib/postgresql/15/bin';
const V30 = 0x0003_0000;
const V32 = 0x0003_0002;
const CANCEL_CODE = 80877102;
const SSL_CODE = 80877103;

// ------------------------------------------------------------------------------------------------
// Raw client

/** Log in with the given protocol version; every message of the login, up to ReadyForQuery
 * (ErrorResponses included, not thrown, here and in later until() calls). */
function rawLogin(port: number, database: string, version: number, extra: Record<string, string> = {}): Promise<{ conn: RawConn; login: BackendMessage[] }> {
  return RawConn.login(port, { user: USER, database, ...extra }, { version, timeoutMs: 30_000, onError: 'keep' });
}

interface Key {
  pid: number;
  secret: Buffer;
}

function backendKey(login: BackendMessage[]): Key {
  const k = login.find((m) => m.type === 'K');
  assert.ok(k, `no BackendKeyData in ${login.map((m) => m.type).join('')}`);
  return { pid: k.body.readInt32BE(0), secret: Buffer.from(k.body.subarray(4)) };
}

/** NegotiateProtocolVersion: the version field as sent, and the options listed. */
function negotiate(m: BackendMessage): { version: number; options: string[] } {
  const n = m.body.readInt32BE(4);
  const options: string[] = [];
  let pos = 8;
  for (let i = 0; i < n; i++) {
    const z = m.body.indexOf(0, pos);
    options.push(m.body.toString('utf8', pos, z));
    pos = z + 1;
  }
  return { version: m.body.readUInt32BE(0), options };
}

/** Send a CancelRequest on a new connection, as libpq does; resolves once the pooler closed it
 * (or after 5 s). */
function sendCancel(port: number, key: Key): Promise<void> {
  return sendCancelRequest(port, key.pid, key.secret, { ifOpen: 'resolve' });
}

// ------------------------------------------------------------------------------------------------
// Sniffing proxy between the pooler and PostgreSQL

interface Sniffed {
  /** The first packet's code: a StartupMessage's protocol version, or CANCEL_CODE. */
  firstCode: number;
  /** Secret length of a CancelRequest the pooler sent. */
  cancelKeyLen: number | null;
  /** Secret length of the server's BackendKeyData. */
  serverKeyLen: number | null;
  /** The server's NegotiateProtocolVersion, if it sent one. */
  serverNegotiate: { version: number; options: string[] } | null;
}

interface Sniffer {
  readonly port: number;
  readonly conns: Sniffed[];
  close(): Promise<void>;
}

async function startSniffer(target: { host: string; port: number }): Promise<Sniffer> {
  const conns: Sniffed[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const rec: Sniffed = { firstCode: 0, cancelKeyLen: null, serverKeyLen: null, serverNegotiate: null };
    conns.push(rec);
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    // Pooler → server: only the first untyped packets matter (SSLRequest, then the startup).
    let cbuf = Buffer.alloc(0);
    let sslAnswerPending = false;
    let clientDone = false;
    client.on('data', (d: Buffer) => {
      upstream.write(d);
      if (clientDone) return;
      cbuf = Buffer.concat([cbuf, d]);
      while (!clientDone && cbuf.length >= 8 && cbuf.length >= cbuf.readInt32BE(0)) {
        const len = cbuf.readInt32BE(0);
        const code = cbuf.readUInt32BE(4);
        if (code === SSL_CODE) sslAnswerPending = true;
        else {
          rec.firstCode = code;
          if (code === CANCEL_CODE) rec.cancelKeyLen = len - 12;
          clientDone = true;
        }
        cbuf = cbuf.subarray(len);
      }
    });
    // Server → pooler: typed messages up to the first ReadyForQuery.
    let sbuf = Buffer.alloc(0);
    let serverDone = false;
    upstream.on('data', (d: Buffer) => {
      client.write(d);
      if (serverDone) return;
      sbuf = Buffer.concat([sbuf, d]);
      if (sslAnswerPending && sbuf.length > 0) {
        sbuf = sbuf.subarray(1);
        sslAnswerPending = false;
      }
      while (!serverDone && sbuf.length >= 5 && sbuf.length >= 1 + sbuf.readInt32BE(1)) {
        const len = sbuf.readInt32BE(1);
        const type = String.fromCharCode(sbuf[0]!);
        const body = sbuf.subarray(5, 1 + len);
        if (type === 'K') rec.serverKeyLen = body.length - 4;
        if (type === 'v') rec.serverNegotiate = negotiate({ type, body });
        if (type === 'Z' || type === 'E') serverDone = true;
        sbuf = sbuf.subarray(1 + len);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  assert.ok(addr !== null && typeof addr === 'object');
  return {
    port: addr.port,
    conns,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

// ------------------------------------------------------------------------------------------------

/** Wait until PostgreSQL shows a pg_sleep running (the query reached the server). */
async function waitForSleep(cluster: Cluster): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const r = await cluster.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(20)%'`, 'postgres');
    if ((r.rows[0]?.n ?? 0) > 0) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('pg_sleep(20) never showed up as active');
}

/**
 * Run pg_sleep(20) on `conn`, cancel it with `key` through the pooler and return how long the
 * error took after the CancelRequest, checking it is a query_canceled (57014).
 */
async function cancelSleep(poolerPort: number, cluster: Cluster, conn: RawConn, key: Key, wrongKeys: Key[] = []): Promise<number> {
  conn.send(msg('Q', cstr('SELECT pg_sleep(20)')));
  await waitForSleep(cluster);
  for (const wrong of wrongKeys) {
    await sendCancel(poolerPort, wrong);
    const early = await conn.poll(500);
    assert.equal(early, null, `a CancelRequest with a wrong key (${wrong.secret.length} bytes) must not cancel`);
  }
  const t0 = Date.now();
  await sendCancel(poolerPort, key);
  const reply = await conn.until('Z', { timeoutMs: 5_000 });
  const elapsed = Date.now() - t0;
  const err = reply.find((m) => m.type === 'E');
  assert.ok(err, `no ErrorResponse: ${reply.map((m) => m.type).join('')}`);
  assert.equal(errorFields(err).C, '57014', errorFields(err).M);
  return elapsed;
}

function flipped(key: Key, at: number): Key {
  const secret = Buffer.from(key.secret);
  secret[at] = secret[at]! ^ 0xff;
  return { pid: key.pid, secret };
}

// ------------------------------------------------------------------------------------------------

describe('protocol 3.2', () => {
  let pg18: Cluster | undefined;
  let pg15: Cluster | undefined;
  let sniff18: Sniffer | undefined;
  let sniff15: Sniffer | undefined;
  let pooler: Pooler | undefined;
  const conns: RawConn[] = [];
  const port = (): number => required(() => pooler, 'pooler')().port;
  const c18 = required(() => pg18, 'cluster');
  const login = async (db: string, version: number, extra: Record<string, string> = {}) => {
    const r = await rawLogin(port(), db, version, extra);
    conns.push(r.conn);
    const err = r.login.find((m) => m.type === 'E');
    assert.equal(err, undefined, err === undefined ? '' : errorFields(err).M);
    return r;
  };
  const hasPg15 = fs.existsSync(`${PG15_BIN}/postgres`);

  before(async () => {
    pg18 = await startCluster({ name: 'proto32' });
    sniff18 = await startSniffer({ host: '127.0.0.1', port: pg18.port });
    const databases: Record<string, string> = { p0: `host=127.0.0.1 port=${sniff18.port} dbname=p0` };
    if (hasPg15) {
      const saved = process.env.PGPOOL_TEST_PG_BIN;
      process.env.PGPOOL_TEST_PG_BIN = PG15_BIN;
      try {
        pg15 = await startCluster({ name: 'proto32-pg15' });
      } finally {
        if (saved === undefined) delete process.env.PGPOOL_TEST_PG_BIN;
        else process.env.PGPOOL_TEST_PG_BIN = saved;
      }
      sniff15 = await startSniffer({ host: '127.0.0.1', port: pg15.port });
      databases.p15 = `host=127.0.0.1 port=${sniff15.port} dbname=p0`;
    }
    pooler = await startPooler(
      {
        pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '2', server_tls_sslmode: 'disable' },
        databases,
      },
      { userlist: { [USER]: 'unused' } },
    );
  });
  dumpLogsOnFailure({ clusters: () => [pg18, pg15], poolers: () => [pooler], poolerLines: 150, clusterLines: 60 });
  afterEach(() => {
    for (const conn of conns.splice(0)) conn.close();
  });
  after(async () => {
    await pooler?.stop();
    await Promise.all([sniff18?.close(), sniff15?.close()]);
    await Promise.all([pg18?.destroy(), pg15?.destroy()]);
  });

  describe('client side', () => {
    it('a 3.2 client: no NegotiateProtocolVersion, a 32-byte secret, and its long key cancels pg_sleep(20) within 2 s', async () => {
      const { conn, login: msgs } = await login('p0', V32);
      assert.ok(!msgs.some((m) => m.type === 'v'), 'no NegotiateProtocolVersion for a version the pooler speaks');
      const key = backendKey(msgs);
      assert.equal(key.secret.length, 32, 'protocol 3.2 secret length');
      const elapsed = await cancelSleep(port(), c18(), conn, key, [
        flipped(key, 31),
        // The first 4 bytes alone are not the key.
        { pid: key.pid, secret: key.secret.subarray(0, 4) },
      ]);
      assert.ok(elapsed < 2_000, `cancel took ${elapsed} ms`);
      // The connection goes on.
      conn.send(msg('Q', cstr('SELECT 1')));
      const after = await conn.until('Z');
      assert.ok(after.some((m) => m.type === 'D'));
    });

    it('3.2 secrets are random and distinct (peering marks the process id, as in 3.0 keys: peering.test.ts)', async () => {
      const keys: Buffer[] = [];
      for (let i = 0; i < 5; i++) keys.push(backendKey((await login('p0', V32)).login).secret);
      assert.equal(new Set(keys.map((k) => k.toString('hex'))).size, keys.length, 'distinct secrets');
    });

    it('a 3.0 client keeps a 4-byte secret, and its cancel works', async () => {
      const { conn, login: msgs } = await login('p0', V30);
      assert.ok(!msgs.some((m) => m.type === 'v'));
      const key = backendKey(msgs);
      assert.equal(key.secret.length, 4, 'protocol 3.0 secret length');
      const elapsed = await cancelSleep(port(), c18(), conn, key, [flipped(key, 0)]);
      assert.ok(elapsed < 2_000, `cancel took ${elapsed} ms`);
    });

    it('a client asking for 3.5 gets NegotiateProtocolVersion offering 3.2, then a 32-byte secret', async () => {
      const { login: msgs } = await login('p0', 0x0003_0005);
      const v = msgs.find((m) => m.type === 'v');
      assert.ok(v, 'NegotiateProtocolVersion');
      // PostgreSQL sends the whole version number (major << 16 | minor), and libpq checks it:
      // anything below 3.0 is "server requested downgrade to pre-3.0 protocol version".
      const n = negotiate(v);
      assert.equal(n.version, V32, `version field 0x${n.version.toString(16)}, PostgreSQL 18 sends 0x${V32.toString(16)}`);
      assert.deepEqual(n.options, []);
      assert.equal(backendKey(msgs).secret.length, 32);
    });

    for (const [label, version] of [['3.0', V30], ['3.2', V32]] as const) {
      it(`a ${label} client with _pq_ options gets NegotiateProtocolVersion listing them, and logs in`, async () => {
        const { login: msgs } = await login('p0', version, { '_pq_.x': 'on', '_pq_.other': '1' });
        const v = msgs.find((m) => m.type === 'v');
        assert.ok(v, 'NegotiateProtocolVersion');
        const n = negotiate(v);
        assert.deepEqual(n.options.sort(), ['_pq_.other', '_pq_.x']);
        assert.equal(n.version, version, `version field 0x${n.version.toString(16)}, PostgreSQL 18 sends 0x${version.toString(16)}`);
        assert.equal(backendKey(msgs).secret.length, version === V32 ? 32 : 4);
        assert.ok(msgs.some((m) => m.type === 'Z'));
      });
    }
  });

  describe('server side', () => {
    it('against PostgreSQL 18 the pooler logs in with 3.2, gets a 32-byte key, and cancels with it', async () => {
      assert.ok(sniff18);
      assert.equal(c18().version, 18);
      // A 3.0 client: the server side is 3.2 whatever the client speaks.
      const { conn, login: msgs } = await login('p0', V30);
      const key = backendKey(msgs);
      conn.send(msg('Q', cstr('SELECT 1')));
      await conn.until('Z');
      const logins = sniff18.conns.filter((r) => r.firstCode !== CANCEL_CODE);
      assert.ok(logins.length > 0, 'the pooler connected through the sniffer');
      for (const r of logins) {
        assert.equal(r.firstCode, V32, `StartupMessage version 0x${r.firstCode.toString(16)}`);
        assert.equal(r.serverNegotiate, null, 'PostgreSQL 18 accepts 3.2 without negotiating');
        assert.equal(r.serverKeyLen, 32, 'PostgreSQL 18 BackendKeyData secret length');
      }
      const seen = sniff18.conns.length;
      const elapsed = await cancelSleep(port(), c18(), conn, key);
      assert.ok(elapsed < 2_000, `cancel took ${elapsed} ms`);
      const cancels = sniff18.conns.slice(seen).filter((r) => r.firstCode === CANCEL_CODE);
      assert.equal(cancels.length, 1, 'one CancelRequest reached the server');
      assert.equal(cancels[0]!.cancelKeyLen, 32, 'the server\'s own 32-byte key was used');
    });

    it('against PostgreSQL 15 the 3.2 startup falls back to 3.0, and cancel still works for 3.0 and 3.2 clients', async (t) => {
      if (!hasPg15 || pg15 === undefined || sniff15 === undefined) {
        console.log(`# skipped: no PostgreSQL 15 binaries in ${PG15_BIN}`);
        t.skip(`no PostgreSQL 15 binaries in ${PG15_BIN}`);
        return;
      }
      assert.equal(pg15.version, 15);
      for (const version of [V30, V32]) {
        const { conn, login: msgs } = await login('p15', version);
        const key = backendKey(msgs);
        assert.equal(key.secret.length, version === V32 ? 32 : 4, 'the client keeps the key length of its own protocol');
        const seen: number = sniff15.conns.length;
        const elapsed = await cancelSleep(port(), pg15, conn, key);
        assert.ok(elapsed < 2_000, `cancel took ${elapsed} ms`);
        const cancels: Sniffed[] = sniff15.conns.slice(seen).filter((r) => r.firstCode === CANCEL_CODE);
        assert.equal(cancels.length, 1);
        assert.equal(cancels[0]!.cancelKeyLen, 4, 'the server\'s own 4-byte key was used');
        conn.send(msg('Q', cstr('SELECT 1')));
        assert.ok((await conn.until('Z')).some((m) => m.type === 'D'), 'the connection goes on after the cancel');
      }
      const logins = sniff15.conns.filter((r) => r.firstCode !== CANCEL_CODE);
      assert.ok(logins.length > 0);
      for (const r of logins) {
        assert.equal(r.firstCode, V32, 'the pooler asks for 3.2');
        assert.deepEqual(r.serverNegotiate, { version: V30, options: [] }, 'PostgreSQL 15 negotiates down to 3.0');
        assert.equal(r.serverKeyLen, 4, 'PostgreSQL 15 BackendKeyData secret length');
      }
    });
  });
});
