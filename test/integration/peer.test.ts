// Peer credentials (SO_PEERCRED) on the unix socket, through the optional native addon
// native/peercred, with the real pooler started as the same OS user as this test:
// - user `pgbouncer` reaches the console with no password and admin rights over the unix socket
//   (PgBouncer's rule for the pooler's own OS user), and not over TCP;
// - an hba `peer` line lets in the user named like the test's OS user, and one mapped to it by
//   auth_ident_file, and refuses any other with FATAL 28000 naming both names;
// - peer never applies over TCP;
// - without the addon (a copy of the pooler with no native build next to it), peer logins are
//   refused saying why and how to build it, and that is logged once.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { connectClient, queryOnce, type PgError } from '../support/pg-client.js';
import { USERS } from '../support/pg-cluster.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { messageOf, useSetup } from '../support/suite.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ADDON = path.join(ROOT, 'native/peercred/build/Release/peercred.node');
const OS_USER = os.userInfo().username;
const MAP = 'osmap';
const UNAVAILABLE = /peer authentication is unavailable because the native addon was not built; build it with "npm run build:native"/;

let work = '';

function ini(): IniSections {
  return {
    pgbouncer: {
      auth_type: 'hba',
      auth_hba_file: path.join(work, 'hba.conf'),
      auth_ident_file: path.join(work, 'ident.conf'),
      log_connections: '1',
    },
    databases: {
      p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
      p1: `host=127.0.0.1 port=${c().port} dbname=p1`,
    },
  };
}

const { c, p } = useSetup({
  cluster: { name: 'peer' },
  prepare: async (cluster) => {
    // The OS user's own role, for the name-equals-user case (the cluster's hba trusts it on TCP).
    await cluster.query(`CREATE ROLE "${OS_USER.replace(/"/g, '""')}" LOGIN`, 'postgres');
    work = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-peer-'));
    await fsp.writeFile(
      path.join(work, 'hba.conf'),
      `local p0 all peer\nlocal p1 all peer map=${MAP}\nhost p1 ${USERS.md5.name} all md5\n`,
    );
    await fsp.writeFile(path.join(work, 'ident.conf'), `${MAP} "${OS_USER}" ${USERS.trust.name}\n`);
  },
  pooler: { ini: () => ini(), options: { userlist: { [USERS.md5.name]: USERS.md5.password } } },
  dumpLogs: {},
});

after(async () => {
  if (work !== '') await fsp.rm(work, { recursive: true, force: true });
});

function unix(target: Pooler, user: string, database: string): pg.ClientConfig {
  return { host: target.dir, port: target.port, user, database, connectionTimeoutMillis: 10_000, query_timeout: 20_000 };
}

function tcp(target: Pooler, user: string, database: string, password?: string): pg.ClientConfig {
  return { host: target.host, port: target.port, user, database, password, connectionTimeoutMillis: 10_000, query_timeout: 20_000 };
}

/** The login is refused with this SQLSTATE and a message matching `message`. */
async function refused(config: pg.ClientConfig, code: string, message: RegExp): Promise<void> {
  await assert.rejects(connectClient(config).then((cl) => cl.end()), (e: PgError) => {
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

describe('peer credentials on the unix socket', () => {
  it('the native addon was built by the install (npm ci / npm run build:native)', () => {
    assert.ok(fs.existsSync(ADDON), `${ADDON} is missing: run "npm run build:native" (needs make, a C compiler and python3)`);
  });

  it('user pgbouncer gets into the console with no password and admin rights, as the pooler\'s OS user', async () => {
    const con = await connectClient(unix(p(), 'pgbouncer', 'pgbouncer'));
    try {
      const state = await con.query('SHOW STATE');
      assert.equal(state.rows.length, 3);
      // A control command: admin rights, not just stats.
      assert.equal((await con.query('RELOAD')).command, 'RELOAD');
    } finally {
      await con.end();
    }
    assert.ok(p().logs().some((l) => messageOf(l) === 'pgbouncer access from unix socket'));
  });

  it('user pgbouncer over TCP gets no such pass', async () => {
    await refused(tcp(p(), 'pgbouncer', 'pgbouncer'), '28000', /^no pg_hba\.conf entry for host "127\.0\.0\.1", user "pgbouncer", database "pgbouncer"/);
  });

  it(`an hba peer line lets in the user named like the OS user ("${OS_USER}")`, async () => {
    const rows = await queryOnce<{ u: string }>(unix(p(), OS_USER, 'p0'), 'SELECT current_user AS u');
    assert.deepEqual(rows, [{ u: OS_USER }]);
  });

  it('and refuses another user with FATAL 28000 naming both names', async () => {
    await refused(
      unix(p(), USERS.md5.name, 'p0'),
      '28000',
      new RegExp(`^peer authentication failed for user "${USERS.md5.name}": OS user "${OS_USER}" does not match user "${USERS.md5.name}"$`),
    );
  });

  it('with map=, the user the ident map gives the OS user gets in, and no other', async () => {
    const rows = await queryOnce<{ u: string }>(unix(p(), USERS.trust.name, 'p1'), 'SELECT current_user AS u');
    assert.deepEqual(rows, [{ u: USERS.trust.name }]);
    await refused(
      unix(p(), OS_USER, 'p1'),
      '28000',
      new RegExp(`^peer authentication failed for user "${OS_USER}": OS user "${OS_USER}" is not mapped to user "${OS_USER}" by map "${MAP}"$`),
    );
  });

  it('peer never applies over TCP, even for the user named like the OS user', async () => {
    await refused(tcp(p(), OS_USER, 'p0'), '28000', new RegExp(`^no pg_hba\\.conf entry for host "127\\.0\\.0\\.1", user "${OS_USER}", database "p0"`));
    // The same pooler still takes its TCP line.
    const rows = await queryOnce<{ u: string }>(tcp(p(), USERS.md5.name, 'p1', USERS.md5.password), 'SELECT current_user AS u');
    assert.deepEqual(rows, [{ u: USERS.md5.name }]);
  });
});

describe('without the native addon', () => {
  it('peer logins are refused saying it was not built and how to build it; logged once; other logins work', async () => {
    // A copy of the compiled pooler with no native/ next to it, as after `npm ci --ignore-scripts`.
    const bare = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-noaddon-'));
    let q: Pooler | undefined;
    try {
      await fsp.cp(path.join(ROOT, 'dist/src'), path.join(bare, 'dist/src'), { recursive: true });
      await fsp.symlink(path.join(ROOT, 'node_modules'), path.join(bare, 'node_modules'));
      await fsp.copyFile(path.join(ROOT, 'package.json'), path.join(bare, 'package.json'));
      q = await startPooler(ini(), { userlist: { [USERS.md5.name]: USERS.md5.password }, main: path.join(bare, 'dist/src/main.js') });
      await refused(unix(q, OS_USER, 'p0'), '28000', UNAVAILABLE);
      await refused(unix(q, USERS.trust.name, 'p1'), '28000', UNAVAILABLE);
      await refused(unix(q, 'pgbouncer', 'pgbouncer'), '28000', UNAVAILABLE);
      const rows = await queryOnce<{ u: string }>(tcp(q, USERS.md5.name, 'p1', USERS.md5.password), 'SELECT current_user AS u');
      assert.deepEqual(rows, [{ u: USERS.md5.name }]);
      // Each refusal is a pooler error line; the reason itself is logged once, on its own.
      const warnings = q.logs().filter((l) => messageOf(l).startsWith('peer authentication is unavailable'));
      assert.equal(warnings.length, 1, q.logs().join('\n'));
    } finally {
      await q?.stop();
      await fsp.rm(bare, { recursive: true, force: true });
    }
  });
});
