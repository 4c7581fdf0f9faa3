// PgBouncer settings that act in smaller ways, each through the real pooler and real clients:
// - disable_pqexec refuses the simple query protocol (psql) and lets the extended one through;
// - scram_iterations is the count of the verifier made from a plain-text auth_file password;
// - client_tls_dheparams = auto offers the DHE suites, none does not;
// - [databases] auth_query and auth_dbname replace the global ones for that database;
// - a setting pgpool-ts does not act on is named, with the reason, in a warning at startup.

import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { cstr, int32, msg, sslRequest, startupPacket } from '../support/bytes.js';
import { connectClient, type PgError } from '../support/pg-client.js';
import { USERS } from '../support/pg-cluster.js';
import { makePki } from '../support/pki.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { RawConn } from '../support/raw-client.js';
import { psql } from '../support/run-cmd.js';
import { usePooler, useSetup } from '../support/suite.js';

const USER = USERS.trust.name;
const setup = useSetup({
  cluster: { name: 'settings' },
  roles: ['r_aq'],
  prepare: async (c) => {
    await c.query("ALTER ROLE r_aq PASSWORD 'aqpass'", 'postgres');
    // The auth function exists in p1 only: a query run in another database fails.
    await c.query(
      `CREATE FUNCTION aq(u text) RETURNS TABLE (usename name, passwd text) LANGUAGE sql SECURITY DEFINER
         AS $$ SELECT usename, passwd FROM pg_shadow WHERE usename = u $$`, 'p1');
  },
});
const { c } = setup;

function target(db: string, extra = ''): string {
  return `host=127.0.0.1 port=${c().port} dbname=${db} ${extra}`.trim();
}

describe('disable_pqexec', () => {
  const { p } = usePooler({
    ini: () => ({ pgbouncer: { auth_type: 'trust', disable_pqexec: '1', admin_users: USER }, databases: { p0: target('p0') } }),
    dumpLogs: { clusters: () => [setup.cluster] },
  });

  it('closes a client that sends a simple Query with PgBouncer\'s error, and serves the extended protocol', async () => {
    const r = await psql(`postgresql://${USER}@127.0.0.1:${p().port}/p0`, 'SELECT 1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /FATAL: {2}PQexec disallowed/);
    const client = await connectClient({ host: '127.0.0.1', port: p().port, user: USER, database: 'p0' });
    try {
      assert.deepEqual((await client.query({ text: 'SELECT $1::int AS x', values: [7] })).rows, [{ x: 7 }]);
      await assert.rejects(client.query('SELECT 1'), (e: PgError) => e.message === 'PQexec disallowed' || /terminated/.test(e.message));
    } finally {
      await client.end().catch(() => undefined);
    }
    // The console, which speaks only the simple protocol, still answers.
    const console = await psql(`postgresql://${USER}@127.0.0.1:${p().port}/pgbouncer`, 'SHOW VERSION');
    assert.equal(console.code, 0, console.stderr);
  });
});

describe('scram_iterations', () => {
  const { p } = usePooler({
    ini: () => ({ pgbouncer: { auth_type: 'scram-sha-256', scram_iterations: '12345' }, databases: { p0: target('p0') } }),
    options: { userlist: { [USER]: 'plainpass' } },
  });

  async function serverFirst(user: string): Promise<string> {
    const conn = await RawConn.connect(p().port);
    try {
      conn.send(startupPacket({ user, database: 'p0' }));
      await conn.next();
      const clientFirst = Buffer.from('n,,n=,r=abcdefghijklmnop');
      conn.send(msg('p', cstr('SCRAM-SHA-256'), int32(clientFirst.length), clientFirst));
      const cont = await conn.next();
      assert.ok(cont?.type === 'R' && cont.body.readInt32BE(0) === 11, 'no AuthenticationSASLContinue');
      return cont.body.toString('utf8', 4);
    } finally {
      conn.destroy();
    }
  }

  it('makes the verifier of a plain-text password with that many iterations, and offers unknown users the same', async () => {
    assert.match(await serverFirst(USER), /,i=12345$/);
    assert.match(await serverFirst('nobody'), /,i=12345$/);
    const client = await connectClient({ host: '127.0.0.1', port: p().port, user: USER, password: 'plainpass', database: 'p0' });
    assert.deepEqual((await client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    await client.end();
  });
});

describe('client_tls_dheparams', () => {
  const poolers: Record<string, Pooler> = {};
  before(async () => {
    // DHE-RSA suites need an RSA certificate.
    const pki = await makePki(path.join(os.tmpdir(), `pgpool-dhe-${process.pid}`), { keyType: 'rsa' });
    for (const dheparams of ['auto', 'none']) {
      poolers[dheparams] = await startPooler({
        pgbouncer: {
          auth_type: 'trust', client_tls_sslmode: 'require', client_tls_key_file: pki.server.key,
          client_tls_cert_file: pki.server.chain, client_tls_dheparams: dheparams,
        },
        databases: { p0: target('p0') },
      });
    }
  });
  after(async () => {
    for (const pooler of Object.values(poolers)) await pooler.stop();
  });

  /** A TLS 1.2 handshake offering only a DHE suite: the suite agreed, or the failure. */
  function dheHandshake(port: number): Promise<string> {
    return new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port }, () => sock.write(sslRequest()));
      sock.once('error', (e) => resolve(`error: ${e.message}`));
      sock.once('data', (b) => {
        if (b[0] !== 0x53) return resolve('refused SSLRequest');
        const t = tls.connect({ socket: sock, rejectUnauthorized: false, maxVersion: 'TLSv1.2', ciphers: 'DHE-RSA-AES128-GCM-SHA256' }, () => {
          resolve(t.getCipher().name);
          t.destroy();
        });
        t.once('error', (e) => resolve(`error: ${e.message}`));
      });
    });
  }

  it('auto offers the DHE suites, none does not', async () => {
    assert.equal(await dheHandshake(poolers.auto!.port), 'DHE-RSA-AES128-GCM-SHA256');
    assert.match(await dheHandshake(poolers.none!.port), /^error:/);
  });
});

describe('[databases] auth_query and auth_dbname', () => {
  const { p } = usePooler({
    ini: () => ({
      pgbouncer: { auth_type: 'md5', auth_user: 'postgres', auth_query: 'SELECT no_such_function($1)' },
      databases: {
        // The function lives in p1: only auth_dbname makes it work from p0.
        own: target('p0', "auth_query='SELECT * FROM aq($1)' auth_dbname=p1"),
        // The global auth_query (broken here) applies to a database that sets none.
        global: target('p0'),
        // auth_dbname names a database of this file, as in PgBouncer.
        p1: target('p1'),
      },
    }),
    dumpLogs: { clusters: () => [setup.cluster] },
  });

  it('uses the database\'s own auth_query in its own auth_dbname', async () => {
    const ok = await connectClient({ host: '127.0.0.1', port: p().port, user: 'r_aq', password: 'aqpass', database: 'own' });
    assert.deepEqual((await ok.query('SELECT current_user AS u')).rows, [{ u: 'r_aq' }]);
    await ok.end();
    await assert.rejects(
      connectClient({ host: '127.0.0.1', port: p().port, user: 'r_aq', password: 'wrong', database: 'own' }),
      (e: PgError) => e.code === '28P01',
    );
    await assert.rejects(connectClient({ host: '127.0.0.1', port: p().port, user: 'r_aq', password: 'aqpass', database: 'global' }));
  });
});

describe('settings without effect', () => {
  const { p } = usePooler({
    ini: () => ({
      pgbouncer: { auth_type: 'trust', pkt_buf: '8192', resolv_conf: '/etc/resolv.conf', conffile: '/etc/other.ini', sbuf_loopcnt: '5' },
      databases: { p0: target('p0') },
    }),
  });

  it('are named at startup with the reason, when set to anything but their default', async () => {
    await p().waitForLog(/pkt_buf = 8192 has no effect: Node sizes its own read buffers/);
    await p().waitForLog(/resolv_conf = \/etc\/resolv.conf has no effect: host names are resolved with the system resolver/);
    await p().waitForLog(/conffile = \/etc\/other.ini has no effect: RELOAD and SIGHUP always read the file given with -c/);
    assert.ok(!p().logs().some((l) => /sbuf_loopcnt/.test(l)), 'a setting left at its default was named');
    const client: pg.Client = await connectClient({ host: '127.0.0.1', port: p().port, user: USER, database: 'p0' });
    await client.end();
  });
});
