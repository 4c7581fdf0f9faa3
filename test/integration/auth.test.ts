// Client and server authentication through the real pooler, against a real PostgreSQL, judged by
// PgBouncer's documented rules: auth_type trust, plain, md5 and scram-sha-256 against an auth_file
// holding plaintext, md5 and SCRAM secrets; an unknown user is indistinguishable from a wrong
// password; md5 with a SCRAM secret means SCRAM; towards PostgreSQL the password comes from
// [databases], from the auth_file (plain or md5) or from the client's own SCRAM keys; auth_user
// with auth_query; and the login-phase protocol rules (client_login_timeout, protocol
// negotiation, bad lengths) seen from a raw socket.
//
// The md5 and SCRAM secrets are computed from the passwords with node:crypto, independently of
// src/ (test/support/secrets.ts, raw-client.ts), so the pooler's hashing is checked against the
// definitions, not against itself.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { cstr, int32, msg, startupPacket, V3 } from '../support/bytes.js';
import { connectClient, queryOnce as queryOnceWith, type PgError } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { errorFields, RawConn, scramExchange, type BackendMessage } from '../support/raw-client.js';
import { psql } from '../support/run-cmd.js';
import { md5Secret, scramSecret } from '../support/secrets.js';
import { dumpLogsOnFailure, logSince, messageOf, required } from '../support/suite.js';
import { waitFor } from '../support/wait.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 10_000;

// ------------------------------------------------------------------------------------------------
// Drivers

function queryOnce<R extends pg.QueryResultRow>(config: pg.ClientConfig, sql: string): Promise<R[]> {
  return queryOnceWith<R>({ connectionTimeoutMillis: CONNECT_TIMEOUT_MS, query_timeout: QUERY_TIMEOUT_MS, ...config }, sql);
}

/** The FATAL a wrong password (or an unknown user) must get: PostgreSQL's exact words and code. */
function passwordFailed(user: string) {
  return (e: PgError): boolean => {
    assert.equal(e.code, '28P01', `SQLSTATE of: ${e.message}`);
    assert.equal(e.severity, 'FATAL');
    assert.equal(e.message, `password authentication failed for user "${user}"`);
    return true;
  };
}

/** PgBouncer's answer to a failed SCRAM exchange, whether the user exists or not. */
function saslFailed(e: PgError): boolean {
  assert.equal(e.code, '28P01', `SQLSTATE of: ${e.message}`);
  assert.equal(e.severity, 'FATAL');
  assert.equal(e.message, 'SASL authentication failed');
  return true;
}

// ------------------------------------------------------------------------------------------------

describe('authentication', () => {
  let cluster: Cluster | undefined;
  const poolers: Pooler[] = [];
  const c = required(() => cluster, 'cluster');
  /** The SCRAM secret PostgreSQL stored for scramuser (for pass-through). */
  let scramuserRolpassword = '';

  const dbs = (extra: Record<string, string> = {}): Record<string, string> => ({
    p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
    p1: `host=127.0.0.1 port=${c().port} dbname=p1`,
    ...extra,
  });

  async function pooler(ini: IniSections, userlist?: Record<string, string>): Promise<Pooler> {
    const p = await startPooler(ini, userlist === undefined ? {} : { userlist });
    poolers.push(p);
    return p;
  }

  before(async () => {
    cluster = await startCluster({ name: 'auth' });
    const r = await cluster.query<{ p: string }>('SELECT rolpassword AS p FROM pg_authid WHERE rolname = $1', 'p0', [USERS.scram.name]);
    scramuserRolpassword = r.rows[0]?.p ?? '';
    assert.match(scramuserRolpassword, /^SCRAM-SHA-256\$/);
    // A schema that would answer auth_query with attacker-chosen passwords if a client's
    // search_path could reach the query (it must not: the default query says pg_catalog).
    await cluster.query(`CREATE SCHEMA evil;
      CREATE VIEW evil.pg_authid AS
        SELECT 'ghost'::name AS rolname, 'ghostpass'::text AS rolpassword, NULL::timestamptz AS rolvaliduntil, true AS rolcanlogin
        UNION ALL
        SELECT '${USERS.md5.name}'::name, 'evilpass', NULL, true;
      GRANT USAGE ON SCHEMA evil TO PUBLIC; GRANT SELECT ON evil.pg_authid TO PUBLIC`);
    // A role PostgreSQL trusts over TCP, whose pooler secret is a SCRAM verifier made here.
    await cluster.query('CREATE ROLE scramlocal LOGIN');
  });
  dumpLogsOnFailure({ clusters: () => [cluster], poolers: () => poolers, clusterLines: 200 });
  after(async () => {
    await Promise.all(poolers.map((p) => p.stop()));
    await cluster?.destroy();
  });

  describe('auth_type = trust with an auth_file', () => {
    let p: Pooler | undefined;
    const port = (): number => required(() => p, 'pooler')().port;
    before(async () => {
      p = await pooler(
        {
          pgbouncer: { auth_type: 'trust', pool_mode: 'session', client_login_timeout: '1', max_packet_size: '65536' },
          databases: dbs(),
        },
        { [USERS.trust.name]: '', [USERS.md5.name]: USERS.md5.password },
      );
    });

    it('lets a listed user in without a password', async () => {
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: USERS.trust.name, database: 'p0' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.trust.name }]);
    });

    it('logs in to PostgreSQL with the plaintext auth_file password when the server asks (md5)', async () => {
      // The client gives no password (trust); md5user's server login needs the file's one.
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: USERS.md5.name, database: 'p0' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.md5.name }]);
    });

    it('refuses a user that is not in the auth_file with PgBouncer\'s "trust" authentication failed', async () => {
      await assert.rejects(
        queryOnce({ host: '127.0.0.1', port: port(), user: USERS.scram.name, database: 'p0' }, 'SELECT 1'),
        (e: PgError) => {
          assert.equal(e.severity, 'FATAL', e.message);
          assert.equal(e.code, '28000', e.message);
          assert.equal(e.message, '"trust" authentication failed');
          return true;
        },
      );
      const r = await psql(`postgresql://nobody@127.0.0.1:${port()}/p0`, 'SELECT 1');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /FATAL: +"trust" authentication failed/);
    });

    describe('login-phase protocol (raw socket)', () => {
      it('closes a client that connects and sends nothing within client_login_timeout + 1 s', async () => {
        const t0 = Date.now();
        const silent = await RawConn.connect(port());
        // Half a startup packet: a length promising more than ever comes.
        const half = await RawConn.connect(port());
        half.send(startupPacket({ user: USERS.trust.name, database: 'p0' }).subarray(0, 10));
        try {
          const [a, b] = await Promise.all([silent.closesWithin(2_000 + 500), half.closesWithin(2_000 + 500)]);
          assert.ok(a, 'silent client still open after client_login_timeout (1 s) + 1 s');
          assert.ok(b, 'half-startup client still open after client_login_timeout (1 s) + 1 s');
          const took = Math.max(await silent.closedAt, await half.closedAt) - t0;
          assert.ok(took <= 2_000 + 300, `closed after ${took} ms`);
          // Not closed at once either: the timeout, not some parse error, closed them.
          assert.ok(took >= 900, `closed after only ${took} ms`);
        } finally {
          silent.destroy();
          half.destroy();
        }
      });

      it('answers a protocol 3.5 startup with NegotiateProtocolVersion for 3.2 and goes on', async () => {
        const raw = await RawConn.connect(port());
        try {
          raw.send(startupPacket({ user: USERS.trust.name, database: 'p0' }, V3 + 5));
          const first = await raw.next();
          assert.equal(first?.type, 'v', 'NegotiateProtocolVersion first');
          assert.equal(first.body.readInt32BE(0), V3 + 2, 'newest version supported: 3.2');
          assert.equal(first.body.readInt32BE(4), 0, 'no unrecognised options');
          await raw.until('Z');
          // The session goes on: a simple query works.
          raw.send(msg('Q', cstr('SELECT 42')));
          const seen: BackendMessage[] = [];
          await raw.until('Z', { seen });
          const row = seen.find((m) => m.type === 'D');
          assert.ok(row, `a DataRow, saw ${seen.map((m) => m.type).join('')}`);
          assert.equal(row.body.toString('utf8', 6), '42');
        } finally {
          raw.destroy();
        }
      });

      it('lists a _pq_ startup option it does not know in NegotiateProtocolVersion', async () => {
        const raw = await RawConn.connect(port());
        try {
          raw.send(startupPacket({ user: USERS.trust.name, database: 'p0', '_pq_.foo': 'bar' }));
          const first = await raw.next();
          assert.equal(first?.type, 'v');
          assert.equal(first.body.readInt32BE(0), V3, 'version 3.0, as the client asked');
          assert.equal(first.body.readInt32BE(4), 1);
          assert.equal(first.body.toString('utf8', 8, first.body.length - 1), '_pq_.foo');
          await raw.until('Z');
          raw.send(msg('Q', cstr('SELECT 1')));
          await raw.until('Z');
        } finally {
          raw.destroy();
        }
      });

      it('refuses a protocol 2 startup with an ErrorResponse', async () => {
        const raw = await RawConn.connect(port());
        try {
          raw.send(startupPacket({ user: USERS.trust.name, database: 'p0' }, 2 * 65536));
          const m = await raw.next();
          assert.equal(m?.type, 'E');
          const f = errorFields(m.body);
          assert.equal(f.S, 'FATAL');
          assert.match(f.M ?? '', /unsupported frontend protocol 2\.0/);
          assert.ok(await raw.closesWithin(2_000), 'closed after the error');
        } finally {
          raw.destroy();
        }
      });

      for (const [name, packet] of [
        ['3', int32(3)],
        ['-1', int32(-1)],
        ['70000 (over the limit)', Buffer.concat([int32(70_000), int32(V3)])],
      ] as const) {
        it(`answers a startup packet length of ${name} with ErrorResponse 08P01 and closes`, async () => {
          const raw = await RawConn.connect(port());
          try {
            raw.send(packet);
            const m = await raw.next();
            assert.equal(m?.type, 'E');
            assert.equal(errorFields(m.body).C, '08P01');
            assert.ok(await raw.closesWithin(2_000), 'closed after the error');
          } finally {
            raw.destroy();
          }
        });
      }

      it('answers a message over max_packet_size after login with ErrorResponse 08P01 and closes', async () => {
        const raw = await RawConn.connect(port());
        try {
          raw.send(startupPacket({ user: USERS.trust.name, database: 'p0' }));
          await raw.until('Z');
          // A Query header announcing 100 000 bytes; max_packet_size is 65536.
          raw.send(Buffer.concat([Buffer.from('Q'), int32(100_000)]));
          const seen: BackendMessage[] = [];
          let m: BackendMessage | null;
          while ((m = await raw.next()) !== null && m.type !== 'E') seen.push(m);
          assert.equal(m?.type, 'E', `an ErrorResponse, saw ${seen.map((s) => s.type).join('')}`);
          assert.equal(errorFields(m.body).C, '08P01');
          assert.ok(await raw.closesWithin(2_000), 'closed after the error');
        } finally {
          raw.destroy();
        }
      });
    });
  });

  describe('auth_type = plain with plaintext secrets', () => {
    let p: Pooler | undefined;
    const port = (): number => required(() => p, 'pooler')().port;
    before(async () => {
      p = await pooler(
        { pgbouncer: { auth_type: 'plain', pool_mode: 'session' }, databases: dbs() },
        { [USERS.md5.name]: USERS.md5.password, [USERS.scram.name]: USERS.scram.password },
      );
    });

    it('accepts the right password, and logs in to PostgreSQL with the file password (md5 and SCRAM servers)', async () => {
      for (const u of [USERS.md5, USERS.scram]) {
        const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: u.name, password: u.password, database: 'p0' }, 'SELECT current_user AS u');
        assert.deepEqual(rows, [{ u: u.name }]);
      }
    });

    it('refuses a wrong password and an unknown user with the same 28P01', async () => {
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: USERS.md5.name, password: 'wrong', database: 'p0' }, 'SELECT 1'), passwordFailed(USERS.md5.name));
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: 'ghost', password: 'wrong', database: 'p0' }, 'SELECT 1'), passwordFailed('ghost'));
    });

    it('works with psql', async () => {
      const ok = await psql(`postgresql://${USERS.scram.name}@127.0.0.1:${port()}/p1`, 'SELECT current_user', { env: { PGPASSWORD: USERS.scram.password } });
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), USERS.scram.name);
      const bad = await psql(`postgresql://${USERS.scram.name}@127.0.0.1:${port()}/p1`, 'SELECT 1', { env: { PGPASSWORD: 'wrong' } });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, new RegExp(`FATAL: +password authentication failed for user "${USERS.scram.name}"`));
    });
  });

  describe('auth_type = md5', () => {
    let p: Pooler | undefined;
    const port = (): number => required(() => p, 'pooler')().port;
    before(async () => {
      p = await pooler(
        {
          pgbouncer: { auth_type: 'md5', pool_mode: 'session' },
          databases: dbs({
            // Forced server users with the password in [databases] (md5 and SCRAM on the server).
            fwd_md5: `host=127.0.0.1 port=${c().port} dbname=p0 user=${USERS.md5.name} password=${USERS.md5.password}`,
            fwd_scram: `host=127.0.0.1 port=${c().port} dbname=p1 user=${USERS.scram.name} password=${USERS.scram.password}`,
          }),
        },
        {
          // md5 hash: md5 towards the client and towards PostgreSQL.
          [USERS.md5.name]: md5Secret(USERS.md5.name, USERS.md5.password),
          // PostgreSQL's own verifier: SCRAM towards the client, pass-through towards PostgreSQL.
          [USERS.scram.name]: scramuserRolpassword,
          // A plaintext secret serves md5 too.
          [USERS.trust.name]: 'plainpass',
          // A SCRAM secret made here, for a user PostgreSQL trusts.
          scramlocal: scramSecret('localpass'),
        },
      );
    });

    it('accepts the right password for an md5 secret, with pg and psql', async () => {
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: USERS.md5.name, password: USERS.md5.password, database: 'p0' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.md5.name }]);
      const r = await psql(`postgresql://${USERS.md5.name}@127.0.0.1:${port()}/p1`, 'SELECT current_user', { env: { PGPASSWORD: USERS.md5.password } });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), USERS.md5.name);
    });

    it('accepts the right password for a plaintext secret', async () => {
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: USERS.trust.name, password: 'plainpass', database: 'p0' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.trust.name }]);
    });

    it('refuses a wrong password with FATAL 28P01, with pg and psql', async () => {
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: USERS.md5.name, password: 'wrong', database: 'p0' }, 'SELECT 1'), passwordFailed(USERS.md5.name));
      const r = await psql(`postgresql://${USERS.md5.name}@127.0.0.1:${port()}/p0`, 'SELECT 1', { env: { PGPASSWORD: 'wrong' } });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`FATAL: +password authentication failed for user "${USERS.md5.name}"`));
    });

    it('refuses an unknown user exactly as a wrong password, after the same md5 exchange', async () => {
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: 'ghost', password: 'whatever', database: 'p0' }, 'SELECT 1'), passwordFailed('ghost'));
      // The md5 challenge is sent before any verdict: asking reveals nothing.
      const raw = await RawConn.connect(port());
      try {
        raw.send(startupPacket({ user: 'ghost', database: 'p0' }));
        const m = await raw.next();
        assert.equal(m?.type, 'R');
        assert.equal(m.body.readInt32BE(0), 5, 'AuthenticationMD5Password');
      } finally {
        raw.destroy();
      }
      const r = await psql(`postgresql://ghost@127.0.0.1:${port()}/p0`, 'SELECT 1', { env: { PGPASSWORD: 'whatever' } });
      assert.match(r.stderr, /FATAL: +password authentication failed for user "ghost"/);
    });

    it('authenticates a user with a SCRAM secret by SCRAM (PgBouncer rule for md5)', async () => {
      const raw = await RawConn.connect(port());
      try {
        raw.send(startupPacket({ user: 'scramlocal', database: 'p0' }));
        const m = await raw.next();
        assert.equal(m?.type, 'R');
        assert.equal(m.body.readInt32BE(0), 10, 'AuthenticationSASL, not MD5Password');
        assert.match(m.body.toString('utf8', 4), /SCRAM-SHA-256/);
      } finally {
        raw.destroy();
      }
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: 'scramlocal', password: 'localpass', database: 'p0' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: 'scramlocal' }]);
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: 'scramlocal', password: 'wrong', database: 'p0' }, 'SELECT 1'), saslFailed);
    });

    it('logs in to PostgreSQL with the password from [databases] (forced md5 and SCRAM users)', async () => {
      const client = { host: '127.0.0.1', port: port(), user: USERS.md5.name, password: USERS.md5.password };
      assert.deepEqual(await queryOnce({ ...client, database: 'fwd_md5' }, 'SELECT current_user AS u, current_database() AS d'), [{ u: USERS.md5.name, d: 'p0' }]);
      assert.deepEqual(await queryOnce({ ...client, database: 'fwd_scram' }, 'SELECT current_user AS u, current_database() AS d'), [{ u: USERS.scram.name, d: 'p1' }]);
    });

    it('logs in to PostgreSQL by md5 with the md5 hash from the auth_file', async () => {
      // No password in [databases]: the server's md5 challenge is answered from the stored hash.
      // Its earlier server connections are ended first, so this one is a fresh login.
      const old = await c().backendPids({ user: USERS.md5.name });
      await c().terminateBackends({ user: USERS.md5.name });
      const rows = await queryOnce<{ u: string; pid: number }>(
        { host: '127.0.0.1', port: port(), user: USERS.md5.name, password: USERS.md5.password, database: 'p1' },
        'SELECT current_user AS u, pg_backend_pid() AS pid',
      );
      assert.equal(rows[0]?.u, USERS.md5.name);
      assert.ok(!old.includes(rows[0].pid), 'a new server login');
    });

    it('passes SCRAM through: a client SCRAM login with the rolpassword verifier logs in to PostgreSQL', async () => {
      // The pooler knows no password for scramuser, only the verifier; the server's SCRAM
      // challenge can only be answered with the keys recovered from the client's proof.
      const rows = await queryOnce<{ u: string }>(
        { host: '127.0.0.1', port: port(), user: USERS.scram.name, password: USERS.scram.password, database: 'p0' },
        'SELECT current_user AS u',
      );
      assert.deepEqual(rows, [{ u: USERS.scram.name }]);
      await assert.rejects(
        queryOnce({ host: '127.0.0.1', port: port(), user: USERS.scram.name, password: 'wrong', database: 'p0' }, 'SELECT 1'),
        saslFailed,
      );
    });
  });

  describe('auth_type = scram-sha-256', () => {
    let p: Pooler | undefined;
    const port = (): number => required(() => p, 'pooler')().port;
    before(async () => {
      p = await pooler(
        { pgbouncer: { auth_type: 'scram-sha-256', pool_mode: 'session' }, databases: dbs() },
        {
          // Plaintext: SCRAM towards the client, and the password towards PostgreSQL's md5.
          [USERS.md5.name]: USERS.md5.password,
          [USERS.scram.name]: scramuserRolpassword,
          // An md5 hash cannot serve SCRAM (as in PostgreSQL).
          [USERS.trust.name]: md5Secret(USERS.trust.name, 'trustpass'),
        },
      );
    });

    it('accepts the right password, with pg and psql', async () => {
      for (const u of [USERS.md5, USERS.scram]) {
        const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: u.name, password: u.password, database: 'p0' }, 'SELECT current_user AS u');
        assert.deepEqual(rows, [{ u: u.name }]);
      }
      const r = await psql(`postgresql://${USERS.scram.name}@127.0.0.1:${port()}/p1`, 'SELECT current_user', { env: { PGPASSWORD: USERS.scram.password } });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), USERS.scram.name);
    });

    it('refuses a wrong password and an unknown user with the same FATAL 28P01, in PgBouncer\'s words', async () => {
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: USERS.scram.name, password: 'wrong', database: 'p0' }, 'SELECT 1'), saslFailed);
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: 'ghost', password: 'wrong', database: 'p0' }, 'SELECT 1'), saslFailed);
      const r = await psql(`postgresql://ghost@127.0.0.1:${port()}/p0`, 'SELECT 1', { env: { PGPASSWORD: 'wrong' } });
      assert.match(r.stderr, /FATAL: +SASL authentication failed/);
    });

    it('refuses a user whose secret is an md5 hash', async () => {
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: port(), user: USERS.trust.name, password: 'trustpass', database: 'p0' }, 'SELECT 1'), saslFailed);
    });

    it('runs the whole SCRAM exchange for an unknown user, with a stable salt, before refusing', async () => {
      const attempt = async (user: string, password: string) => {
        const raw = await RawConn.connect(port());
        try {
          raw.send(startupPacket({ user, database: 'p0' }));
          const sasl = await raw.next();
          assert.equal(sasl?.type, 'R');
          assert.equal(sasl.body.readInt32BE(0), 10, 'AuthenticationSASL');
          const { serverFirst } = await scramExchange(raw, password);
          return { serverFirst, result: await raw.next() };
        } finally {
          raw.destroy();
        }
      };
      const known = await attempt(USERS.scram.name, 'wrong');
      const ghost1 = await attempt('ghost', 'wrong');
      const ghost2 = await attempt('ghost', 'wrong');
      for (const r of [known, ghost1, ghost2]) {
        assert.match(r.serverFirst, /^r=[^,]+,s=[A-Za-z0-9+/=]+,i=\d+$/);
        assert.equal(r.result?.type, 'E');
        assert.equal(errorFields(r.result.body).C, '28P01');
      }
      const saltOf = (s: string) => /,s=([^,]+),/.exec(s)?.[1];
      assert.equal(saltOf(ghost1.serverFirst), saltOf(ghost2.serverFirst), 'the fake salt must not change between probes');
      // The right password by hand, to prove the raw client itself is correct.
      const good = await attempt(USERS.scram.name, USERS.scram.password);
      assert.equal(good.result?.type, 'R');
      assert.equal(good.result.body.readInt32BE(0), 12, 'AuthenticationSASLFinal');
    });
  });

  it('does not retry a failed server login before server_login_retry', async () => {
    // Forced user scramuser with no password anywhere: PostgreSQL's SCRAM challenge cannot be
    // answered. PgBouncer then waits server_login_retry (15 s by default) before trying again,
    // rather than hammering the server.
    const p = await startPooler(
      {
        pgbouncer: { auth_type: 'trust', pool_mode: 'session' },
        databases: { nopass: `host=127.0.0.1 port=${c().port} dbname=p0 user=${USERS.scram.name}` },
      },
      { userlist: { [USERS.trust.name]: '' } },
    );
    try {
      const failures = () => p.logs().filter((l) => l.includes('server login failed')).length;
      await assert.rejects(queryOnce({ host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'nopass' }, 'SELECT 1'), (e: PgError) => {
        assert.equal(e.severity, 'FATAL', e.message);
        return true;
      });
      await new Promise((r) => setTimeout(r, 1_500));
      assert.ok(failures() <= 1, `${failures()} server logins were tried (and failed) within 1.5 s; server_login_retry is 15 s`);
    } finally {
      // Bounded: shutting down while logins fail is cli.test.ts's business.
      await p.stop('SIGTERM', 3_000);
    }
  });

  describe('auth_user and auth_query', () => {
    let p: Pooler | undefined;
    const port = (): number => required(() => p, 'pooler')().port;
    before(async () => {
      p = await pooler(
        {
          pgbouncer: {
            auth_type: 'md5',
            pool_mode: 'session',
            auth_user: 'postgres',
            // A client's search_path must get past the startup check to try to steer the query.
            ignore_startup_parameters: 'search_path',
          },
          databases: dbs(),
        },
        // Only the auth user; PostgreSQL trusts postgres over TCP here.
        { postgres: '' },
      );
    });

    it('looks up a user missing from the auth_file with auth_query and lets it in with its password', async () => {
      // md5user's rolpassword is an md5 hash: md5 towards the client and towards PostgreSQL.
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: USERS.md5.name, password: USERS.md5.password, database: 'p0' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.md5.name }]);
      await assert.rejects(
        queryOnce({ host: '127.0.0.1', port: port(), user: USERS.md5.name, password: 'wrong', database: 'p0' }, 'SELECT 1'),
        passwordFailed(USERS.md5.name),
      );
    });

    it('looks up a SCRAM user with auth_query and passes its SCRAM keys through to PostgreSQL', async () => {
      const rows = await queryOnce<{ u: string }>({ host: '127.0.0.1', port: port(), user: USERS.scram.name, password: USERS.scram.password, database: 'p1' }, 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.scram.name }]);
    });

    it('does not let a client search_path steer auth_query', async () => {
      const viaPostgresJs = async (user: string, password: string) => {
        const sql = postgres({
          host: '127.0.0.1', port: port(), user, password, database: 'p0',
          prepare: false, max: 1, connect_timeout: 10, idle_timeout: 1,
          connection: { search_path: 'evil, pg_catalog' },
          onnotice: () => undefined,
        });
        try {
          const [row] = await sql<{ u: string }[]>`SELECT current_user AS u`;
          return row?.u;
        } finally {
          await sql.end({ timeout: 2 });
        }
      };
      // evil.pg_authid would say 'ghost' exists with ghostpass and md5user's password is evilpass.
      await assert.rejects(viaPostgresJs('ghost', 'ghostpass'), (e: PgError) => {
        assert.equal(e.severity, 'FATAL', e.message);
        return true;
      });
      await assert.rejects(viaPostgresJs(USERS.md5.name, 'evilpass'), (e: PgError) => {
        assert.equal(e.code, '28P01', e.message);
        return true;
      });
      assert.equal(await viaPostgresJs(USERS.md5.name, USERS.md5.password), USERS.md5.name);
    });
  });

  // PgBouncer's answers (client.c set_pool, prepare_auth_database, handle_auth_query_response):
  // no row is "no such user"; a row with a NULL password is a user without one, whom trust lets
  // in and no password matches; an auth database that cannot be used is "bouncer config error"
  // with the reason in the log.
  describe('auth_query and the auth database, as PgBouncer answers', () => {
    const target = (dbname: string, extra = ''): string => `host=127.0.0.1 port=${c().port} dbname=${dbname} ${extra}`;
    const authDbs = (): Record<string, string> => ({
      p0: target('p0'),
      authdb: target('p1'),
      via_authdb: target('p0', 'auth_dbname=authdb'),
      via_nodb: target('p0', 'auth_dbname=nodb'),
      via_console: target('p0', 'auth_dbname=pgbouncer'),
      bad_query: target('p0', "auth_query='SELECT usename, passwd FROM not_pg_shadow WHERE usename = $1'"),
    });
    const authIni = (auth_type: string, extra: Record<string, string> = {}): IniSections => ({
      pgbouncer: { auth_type, pool_mode: 'session', auth_user: 'postgres', admin_users: 'postgres', ...extra },
      databases: authDbs(),
    });
    let trust: Pooler | undefined;
    const t = required(() => trust, 'pooler');
    before(async () => {
      // Only the auth user is in the auth_file; PostgreSQL trusts it over TCP here.
      trust = await pooler(authIni('trust'), { postgres: '' });
    });
    const login = (p: Pooler, user: string, database: string, password?: string) =>
      queryOnce<{ u: string }>({ host: '127.0.0.1', port: p.port, user, password, database }, 'SELECT current_user AS u');
    const refusedWith = (code: string, message: string) => (e: PgError): boolean => {
      assert.equal(e.severity, 'FATAL', e.message);
      assert.equal(e.message, message);
      assert.equal(e.code, code, e.message);
      return true;
    };

    it('trust: a user auth_query finds with a NULL password is let in; one it does not find is "no such user"', async () => {
      // plainuser has no password in PostgreSQL: the default auth_query returns its row with NULL.
      assert.deepEqual(await login(t(), USERS.trust.name, 'p0'), [{ u: USERS.trust.name }]);
      await assert.rejects(login(t(), 'ghost', 'p0'), refusedWith('28000', 'no such user'));
    });

    it('md5: a user with a NULL password matches no password; one auth_query does not find is "no such user"', async () => {
      const md5 = await pooler(authIni('md5'), { postgres: '' });
      await assert.rejects(login(md5, USERS.trust.name, 'p0', 'anything'), passwordFailed(USERS.trust.name));
      await assert.rejects(login(md5, 'ghost', 'p0', 'anything'), refusedWith('28000', 'no such user'));
      assert.deepEqual(await login(md5, USERS.md5.name, 'p0', USERS.md5.password), [{ u: USERS.md5.name }]);
    });

    it('auth_dbname naming a database that is not configured: "bouncer config error", and the log says which', async () => {
      const from = t().logs().length;
      await assert.rejects(login(t(), USERS.trust.name, 'via_nodb'), refusedWith('08P01', 'bouncer config error'));
      await logSince(t(), from, /^authentication database "nodb" is not configured\.$/);
      assert.deepEqual(await login(t(), USERS.trust.name, 'via_authdb'), [{ u: USERS.trust.name }]);
    });

    it('the console as auth database, per database or by default for a console login: "bouncer config error"', async () => {
      const from = t().logs().length;
      await assert.rejects(login(t(), USERS.trust.name, 'via_console'), refusedWith('08P01', 'bouncer config error'));
      // A console login looked up by auth_query with no auth_dbname would query the console itself.
      await assert.rejects(login(t(), USERS.trust.name, 'pgbouncer'), refusedWith('08P01', 'bouncer config error'));
      await waitFor('two log lines', async () =>
        t().logs().slice(from).filter((l) => /cannot use the reserved "pgbouncer" database as an auth_dbname/.test(messageOf(l))).length === 2);
    });

    it('a global auth_dbname = pgbouncer is reported when the config is loaded, and refuses the logins it would serve', async () => {
      const p = await pooler(authIni('trust', { auth_dbname: 'pgbouncer' }), { postgres: '' });
      await logSince(p, 0, /cannot use the reserved "pgbouncer" database as an auth_dbname/);
      await assert.rejects(login(p, USERS.trust.name, 'p0'), refusedWith('08P01', 'bouncer config error'));
      // The auth_file's users do not need the auth database.
      assert.deepEqual(await login(p, 'postgres', 'p0'), [{ u: 'postgres' }]);
    });

    it('a DISABLEd auth database refuses its logins with PgBouncer\'s message', async () => {
      const con = await connectClient({ host: '127.0.0.1', port: t().port, user: 'postgres', database: 'pgbouncer' });
      try {
        await con.query('DISABLE authdb');
        await assert.rejects(login(t(), USERS.trust.name, 'via_authdb'), refusedWith('08P01', 'authentication database "authdb" is disabled'));
        await con.query('ENABLE authdb');
        assert.deepEqual(await login(t(), USERS.trust.name, 'via_authdb'), [{ u: USERS.trust.name }]);
      } finally {
        await con.end();
      }
    });

    it('an auth_query that fails in PostgreSQL: "bouncer config error", and the server\'s error in the log', async () => {
      const from = t().logs().length;
      await assert.rejects(login(t(), USERS.trust.name, 'bad_query'), refusedWith('08P01', 'bouncer config error'));
      await logSince(t(), from, /error in auth_query: relation "not_pg_shadow" does not exist/);
      // The server that answered it serves the next lookup.
      assert.deepEqual(await login(t(), USERS.trust.name, 'p0'), [{ u: USERS.trust.name }]);
    });

    it('after a RELOAD that changed the auth database, auth_query runs on a new server, not a closed one', async () => {
      const p = await pooler(authIni('md5'), { postgres: '' });
      assert.deepEqual(await login(p, USERS.md5.name, 'via_authdb', USERS.md5.password), [{ u: USERS.md5.name }]);
      await p.writeIni({ ...authIni('md5'), databases: { ...authDbs(), authdb: target('p1', 'application_name=changed') } });
      const from = p.logs().length;
      p.reload();
      await logSince(p, from, /configuration reloaded/);
      assert.deepEqual(await login(p, USERS.md5.name, 'via_authdb', USERS.md5.password), [{ u: USERS.md5.name }]);
    });
  });

  it('a forced user whose auth_file secret is a SCRAM verifier, with no client SCRAM keys: "wrong password type" for every waiting client', async () => {
    const p = await pooler(
      {
        pgbouncer: { auth_type: 'trust', pool_mode: 'session' },
        databases: { nokeys: `host=127.0.0.1 port=${c().port} dbname=p0 user=${USERS.scram.name}` },
      },
      { [USERS.trust.name]: '', [USERS.scram.name]: scramuserRolpassword },
    );
    const from = p.logs().length;
    const attempts = [0, 1, 2].map(() =>
      queryOnce({ host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'nokeys' }, 'SELECT 1').then(
        () => assert.fail('logged in without a usable server password'),
        (e: PgError) => e,
      ),
    );
    for (const e of await Promise.all(attempts)) {
      assert.equal(e.message, 'server login failed: wrong password type');
      assert.equal(e.severity, 'FATAL');
    }
    await logSince(p, from, /cannot do SCRAM authentication: password is SCRAM secret but client authentication did not provide SCRAM keys/);
  });
});
