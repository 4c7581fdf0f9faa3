// A [databases] host list (PgBouncer 1.24's load_balance_hosts): `round-robin` puts each new
// server connection on the next host, `disable` stays on one host until a login to it fails. A
// host whose login failed is passed over (for server_login_retry) while another is up, so no
// client fails for it. Host names are resolved once and kept for dns_max_ttl (SHOW DNS_HOSTS).
//
// PostgreSQL listens on 127.0.0.1 and 127.0.0.2, so inet_server_addr() tells which host a server
// connection went to; nothing listens on 127.0.0.3 (a host that is down).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, endAll } from '../support/pg-client.js';
import { usePooler, useSetup, messageOf } from '../support/suite.js';
import type { IniSections, Pooler } from '../support/pooler.js';
import { USERS } from '../support/pg-cluster.js';

const USER = USERS.trust.name;
const setup = useSetup({ cluster: { name: 'load-balance', conf: { listen_addresses: '127.0.0.1,127.0.0.2' } }, dumpLogs: { clusterLines: 50 } });
const { c } = setup;

function db(hosts: string, extra = ''): string {
  return `host=${hosts} port=${c().port} dbname=p0 ${extra}`.trim();
}

function ini(): IniSections {
  return {
    // Session mode: each client holds its own server, so n clients mean n new server connections.
    pgbouncer: { auth_type: 'trust', pool_mode: 'session', admin_users: USER, server_login_retry: '30' },
    databases: {
      rr: db('127.0.0.1,127.0.0.2'),
      fixed: db('127.0.0.1,127.0.0.2', 'load_balance_hosts=disable'),
      bad_first: db('127.0.0.3,127.0.0.2', 'load_balance_hosts=disable'),
      rr_bad: db('127.0.0.1,127.0.0.3', 'load_balance_hosts=round-robin'),
      unresolvable: db('no-such-host.invalid,127.0.0.2', 'load_balance_hosts=disable'),
      named: db('localhost,127.0.0.2', 'load_balance_hosts=disable'),
    },
  };
}

function connect(p: Pooler, database: string): Promise<pg.Client> {
  return connectClient({ host: '127.0.0.1', port: p.port, user: USER, database, connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
}

/** Open `n` clients of `database` at once; the server address each one runs on. */
async function serverAddrs(p: Pooler, database: string, n: number): Promise<string[]> {
  const clients = await Promise.all(Array.from({ length: n }, () => connect(p, database)));
  try {
    return await Promise.all(clients.map(async (cl) => (await cl.query<{ a: string }>('SELECT host(inet_server_addr()) AS a')).rows[0]!.a));
  } finally {
    await endAll(clients);
  }
}

async function console(p: Pooler, sql: string): Promise<Record<string, string | null>[]> {
  const admin = await connect(p, 'pgbouncer');
  try {
    const r = await admin.query({ text: sql, rowMode: 'array', types: { getTypeParser: () => (v: string) => v } });
    return r.rows.map((row: (string | null)[]) => Object.fromEntries(r.fields.map((f, i) => [f.name, row[i] ?? null])));
  } finally {
    await admin.end();
  }
}

const count = (addrs: string[], addr: string): number => addrs.filter((a) => a === addr).length;

describe('load_balance_hosts', () => {
  const { p } = usePooler({ ini, dumpLogs: { clusters: () => [setup.cluster], poolerLines: 300 } });

  it('round-robin (the default) spreads new server connections over the hosts', async () => {
    const addrs = await serverAddrs(p(), 'rr', 6);
    assert.equal(count(addrs, '127.0.0.1'), 3, JSON.stringify(addrs));
    assert.equal(count(addrs, '127.0.0.2'), 3, JSON.stringify(addrs));
  });

  it('disable keeps every server connection on the first host while it is up', async () => {
    assert.deepEqual(await serverAddrs(p(), 'fixed', 4), Array(4).fill('127.0.0.1'));
  });

  it('disable moves on to the next host when the first is down, failing no client', async () => {
    const from = p().logs().length;
    assert.deepEqual(await serverAddrs(p(), 'bad_first', 4), Array(4).fill('127.0.0.2'));
    const failed = p().logs().slice(from).filter((l) => messageOf(l).includes('127.0.0.3') || l.includes('"addr":"127.0.0.3'));
    // One login was enough to learn the host is down (logins to an unproven list go one at a time).
    assert.equal(failed.filter((l) => /ECONNREFUSED/.test(l)).length, 1, failed.join('\n'));
  });

  it('round-robin passes over a host that is down, failing no client', async () => {
    for (let round = 0; round < 3; round++) {
      assert.deepEqual(await serverAddrs(p(), 'rr_bad', 3), Array(3).fill('127.0.0.1'), `round ${round}`);
    }
  });

  it('a host name that does not resolve is a failed login (server DNS lookup failed), and the next host serves', async () => {
    const from = p().logs().length;
    assert.deepEqual(await serverAddrs(p(), 'unresolvable', 2), ['127.0.0.2', '127.0.0.2']);
    assert.ok(p().logs().slice(from).some((l) => /server DNS lookup failed: no-such-host\.invalid/.test(l)), 'no DNS failure logged');
  });

  it('SHOW DATABASES and SHOW POOLS show the mode of host lists; SHOW DNS_HOSTS the cached names', async () => {
    const dbs = await console(p(), 'SHOW DATABASES');
    const mode = (name: string) => dbs.find((r) => r.name === name)?.load_balance_hosts;
    assert.equal(mode('rr'), 'round-robin');
    assert.equal(mode('fixed'), 'disable');
    assert.equal(mode('pgbouncer'), null);
    const pools = await console(p(), 'SHOW POOLS');
    assert.equal(pools.find((r) => r.database === 'fixed')?.load_balance_hosts, 'disable');
    assert.deepEqual(await serverAddrs(p(), 'named', 1), ['127.0.0.1']);
    const hosts = await console(p(), 'SHOW DNS_HOSTS');
    const localhost = hosts.find((h) => h.hostname === 'localhost');
    assert.ok(localhost, JSON.stringify(hosts));
    // PgBouncer prints the resolver's sockaddr: port 0.
    assert.ok((localhost.addrs ?? '').split(',').includes('127.0.0.1:0'), localhost.addrs ?? '');
    assert.ok(Number(localhost.ttl) > 0 && Number(localhost.ttl) <= 15, `ttl ${localhost.ttl}`);
    // The name that did not resolve is kept for dns_nxdomain_ttl, with no address.
    assert.equal(hosts.find((h) => h.hostname === 'no-such-host.invalid')?.addrs, '');
  });

  it('a reload switches the mode', async () => {
    const next = ini();
    next.databases!.fixed = db('127.0.0.1,127.0.0.2', 'load_balance_hosts=round-robin');
    await p().writeIni(next);
    await console(p(), 'RELOAD');
    const dbs = await console(p(), 'SHOW DATABASES');
    assert.equal(dbs.find((r) => r.name === 'fixed')?.load_balance_hosts, 'round-robin');
    const addrs = await serverAddrs(p(), 'fixed', 4);
    assert.equal(count(addrs, '127.0.0.2'), 2, JSON.stringify(addrs));
  });
});
