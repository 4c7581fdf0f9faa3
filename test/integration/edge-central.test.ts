// The edge/central pair (issue 14 §3), the PostgreSQL form of a stunnel client/server pair: an
// edge pgpool-ts next to the application takes it over a unix socket, in plain text, and forwards
// over verify-full TLS with a client certificate to a central pgpool-ts, which requires a valid
// client certificate (client_tls_sslmode = verify-full), logs the edge in by it (auth_type = cert,
// CN = user) and pools to PostgreSQL. A wrong CN at the edge gives the application the central's
// clear FATAL 28000; a cancel from the application crosses both poolers. docs/tls.md §9.4 is the
// same set-up for copy and paste.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type pg from 'pg';
import { connectClient, queryOnce, type PgError } from '../support/pg-client.js';
import { canceled, keyOf, longQuery } from '../support/peers.js';
import type { Pki } from '../support/pki.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { sendCancelRequest } from '../support/raw-client.js';
import { dumpLogsOnFailure, useSetup } from '../support/suite.js';

/** The identity the edge presents: its certificate's CN, a PostgreSQL role. */
const APP = 'app_edge';

const poolers: Pooler[] = [];
let central: Pooler | undefined;

const { c } = useSetup({
  cluster: { name: 'edge-central', ssl: true },
  roles: [APP],
  started: async () => {
    const pki = c().pki!;
    central = await startPooler({
      pgbouncer: {
        auth_type: 'cert',
        pool_mode: 'transaction',
        client_tls_sslmode: 'verify-full',
        client_tls_key_file: pki.server.key,
        client_tls_cert_file: pki.server.chain,
        client_tls_ca_file: pki.caBundle,
        admin_users: APP,
      },
      databases: { appdb: `host=127.0.0.1 port=${c().port} dbname=p0` },
    });
    poolers.push(central);
  },
  dumpLogs: { clusterLines: 40 },
});
dumpLogsOnFailure({ poolers: () => poolers, poolerLines: 60 });
after(() => Promise.all(poolers.map((p) => p.stop('SIGTERM', 3_000))));

/** An edge that presents `cert` to the central: unix socket only, trust, one forced user. */
async function edge(cert: { chain: string; key: string }): Promise<Pooler> {
  const pki: Pki = c().pki!;
  const p = await startPooler({
    pgbouncer: {
      // No TCP: the application reaches the edge through its unix socket only.
      listen_addr: '',
      auth_type: 'trust',
      pool_mode: 'transaction',
      server_tls_sslmode: 'verify-full',
      server_tls_ca_file: pki.caBundle,
      server_tls_cert_file: cert.chain,
      server_tls_key_file: cert.key,
    },
    databases: { appdb: `host=localhost port=${central!.port} dbname=appdb user=${APP}` },
  });
  poolers.push(p);
  return p;
}

function viaEdge(p: Pooler, user = 'anyone'): pg.ClientConfig {
  return { host: p.dir, port: p.port, user, database: 'appdb', connectionTimeoutMillis: 10_000 };
}

describe('edge and central', () => {
  it('the application on the edge\'s unix socket reaches PostgreSQL through the central: verify-full TLS, a client certificate, cert auth (CN = user)', async () => {
    const p = await edge(await c().pki!.clientCert(APP));
    const rows = await queryOnce<{ u: string; one: number }>(viaEdge(p), 'SELECT current_user AS u, 1 AS one');
    assert.deepEqual(rows, [{ u: APP, one: 1 }]);
    // The central sees the edge as a TLS client logged in as APP (its console, as the pooler's
    // own OS user over the unix socket).
    const clients = await queryOnce<{ user: string; database: string; tls: string }>(
      { host: central!.dir, port: central!.port, user: 'pgbouncer', database: 'pgbouncer' },
      'SHOW CLIENTS',
    );
    const edgeRow = clients.find((r) => r.database === 'appdb');
    assert.equal(edgeRow?.user, APP, JSON.stringify(clients));
    assert.match(edgeRow?.tls ?? '', /^TLSv1\.[23]\//);
  });

  it('a cancel from the application crosses both poolers', async () => {
    const p = await edge(await c().pki!.clientCert(APP));
    const client = await connectClient(viaEdge(p));
    try {
      const key = keyOf(client);
      const { work } = await longQuery(c(), client, 'edge-cancel');
      await sendCancelRequest(0, key.pid, key.secret, { path: `${p.dir}/.s.PGSQL.${p.port}` });
      await canceled(work, 'a query canceled through the edge and the central');
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('a wrong CN at the edge: the application gets the central\'s FATAL 28000 naming the CN and the user', async () => {
    const p = await edge(c().pki!.wrongCnClient);
    await assert.rejects(queryOnce(viaEdge(p), 'SELECT 1'), (e: PgError) => {
      assert.equal(e.code, '28000', e.message);
      assert.equal(e.message, `certificate authentication failed for user "${APP}": client certificate CN "wrong-cn" does not match user "${APP}"`);
      return true;
    });
  });
});
