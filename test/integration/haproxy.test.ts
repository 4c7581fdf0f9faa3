// Several pgpool-ts instances behind a TCP load balancer (issue 14 §3): Debian's haproxy in TCP
// mode, round robin, over two poolers on ports of their own whose [peers] name each other by TCP
// address, as instances on separate hosts would. A cancel request is a new connection, and the
// balancer hands it to either instance; the one that gets a key of the other forwards it, so
// cancels always land. When one instance drains, haproxy's PostgreSQL health check sees its
// refusals and takes it out; it keeps its port open for the cancels its peer forwards until its
// last client has left, so a query still running there can be canceled through the balancer.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type pg from 'pg';
import { connectClient, endAll, queryOnce } from '../support/pg-client.js';
import { startHaproxy, type Haproxy } from '../support/haproxy.js';
import { canceled, keyOf, keyPeerId, longQuery, peerLayout, removeLayout, startPeer, type PeerLayout } from '../support/peers.js';
import type { IniSections, Pooler } from '../support/pooler.js';
import { sendCancelRequest } from '../support/raw-client.js';
import { dumpLogsOnFailure, useSetup } from '../support/suite.js';
import { waitFor, within } from '../support/wait.js';

const USER = 'k_haproxy';

let layout: PeerLayout | undefined;
const peers = new Map<number, Pooler>();
let lb: Haproxy | undefined;

const { c } = useSetup({
  cluster: { name: 'haproxy' },
  roles: [USER],
  started: async () => {
    layout = await peerLayout([1, 2], { shared: false, peerAddr: 'tcp' });
    for (const id of [1, 2]) peers.set(id, await startPeer(layout, id, base()));
    lb = await startHaproxy([...layout.ports.values()], USER);
  },
  dumpLogs: { clusterLines: 60 },
});

function base(): IniSections {
  return {
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', admin_users: USER, default_pool_size: '4', log_connections: '0', log_disconnections: '0' },
    // haproxy's pgsql-check names no database, so it asks for the one named like its user.
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0`, [USER]: `host=127.0.0.1 port=${c().port} dbname=p0` },
  };
}

dumpLogsOnFailure({ poolers: () => [...peers.values()], poolerLines: 60 });
after(async () => {
  await lb?.stop();
  await Promise.all([...peers.values()].map((p) => p.stop('SIGQUIT', 3_000)));
  await c().terminateBackends({ user: USER }).catch(() => 0);
  if (layout !== undefined) await removeLayout(layout);
});

function viaBalancer(): pg.ClientConfig {
  return { host: '127.0.0.1', port: lb!.port, user: USER, database: 'p0', connectionTimeoutMillis: 10_000 };
}

describe('two instances behind haproxy', () => {
  it('clients land on both; cancels through the balancer always land, forwarded when they reach the other instance', async () => {
    const clients: pg.Client[] = [];
    try {
      for (let i = 0; i < 4; i++) clients.push(await connectClient(viaBalancer()));
      assert.deepEqual([...new Set(clients.map((cl) => keyPeerId(keyOf(cl).pid)))].sort(), [1, 2]);
      // Round robin: successive cancel connections alternate between the instances, so for each
      // client about half of them are forwarded.
      for (const [i, client] of clients.entries()) {
        const key = keyOf(client);
        for (let round = 0; round < 4; round++) {
          const { work } = await longQuery(c(), client, `lb${i}r${round}`);
          await sendCancelRequest(lb!.port, key.pid, key.secret);
          await canceled(work, `client ${i} (instance ${keyPeerId(key.pid)}), round ${round}`);
        }
      }
      // Each instance forwarded to the other.
      for (const [id, other] of [[1, 2], [2, 1]] as const) {
        const rows = await queryOnce<{ peer_id: number }>({ host: layout!.dirs.get(id)!, port: layout!.ports.get(id)!, user: USER, database: 'pgbouncer' }, 'SHOW PEER_POOLS');
        assert.deepEqual(rows.map((r) => r.peer_id), [other], `instance ${id} forwarded to ${other}`);
      }
    } finally {
      await endAll(clients);
    }
  });

  it('a draining instance leaves the balancer, and a cancel for its running query still lands through it', async () => {
    // A client of instance 1, through the balancer.
    let client: pg.Client | undefined;
    const others: pg.Client[] = [];
    try {
      for (;;) {
        const cl = await connectClient(viaBalancer());
        if (keyPeerId(keyOf(cl).pid) === 1) {
          client = cl;
          break;
        }
        others.push(cl);
      }
      const key = keyOf(client);
      const { work } = await longQuery(c(), client, 'drain-lb');
      const one = peers.get(1)!;
      const exited = one.stop('SIGTERM', 30_000);
      await one.waitForLog(/shutting down/);
      // Refused logins fail the health check: haproxy takes the instance out, and every new client
      // goes to instance 2.
      await waitFor('haproxy takes the draining instance out', async () => /Server poolers\/p1 is DOWN/.test(lb!.output()));
      for (let i = 0; i < 4; i++) {
        const cl = await connectClient(viaBalancer());
        assert.equal(keyPeerId(keyOf(cl).pid), 2);
        await cl.end();
      }
      // The cancel goes to instance 2, which forwards it to instance 1's port, still open for this.
      await sendCancelRequest(lb!.port, key.pid, key.secret);
      await canceled(work, 'a query on the draining instance, canceled through the balancer');
      await client.end();
      client = undefined;
      assert.deepEqual(await within(10_000, 'the drained instance exits', exited), { code: 0, signal: null });
    } finally {
      await client?.end().catch(() => undefined);
      await endAll(others);
    }
  });
});
