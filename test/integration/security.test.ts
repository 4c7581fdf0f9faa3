// Security properties of the client-facing side (issue 7, docs/security.md):
//
// - Secrets never reach the log: logins with distinctive passwords, right and wrong, through md5,
//   SCRAM, cleartext (`password` in hba, PgBouncer's `plain`) and auth_query, a [databases]
//   password and a wrong one, at the most verbose log level; then every line the pooler printed
//   is searched for the passwords, their md5 hashes, the SCRAM verifiers, keys and proofs.
// - The admin console refuses non-admin users: control commands from a stats user (KILL_CLIENT
//   included, PgBouncer's CVE-2026-6667), a login by a user that is neither; and what a stats user
//   can read holds no secret.
// - A client cannot reach another client's prepared statements by their server-side names.
// - Unknown user and wrong password take the same time (md5 and scram-sha-256), median over 200.
// - Two properties are shown elsewhere and only referenced here (the test checks the reference
//   still exists): key files with loose modes are refused (tls-client.test.ts) and auth_query
//   cannot be steered by a client's search_path (auth.test.ts, PgBouncer's CVE-2025-12819).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import { cstr, int32, msg, startupPacket } from '../support/bytes.js';
import { queryOnce } from '../support/pg-client.js';
import { startCluster, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { errorFields, md5Start, RawConn, rows, scramExchange, type BackendMessage } from '../support/raw-client.js';
import { md5hex, md5Secret, scramSecret, scramSecretParts } from '../support/secrets.js';
import { parseLogLine } from '../support/suite.js';
import { noteSecret } from '../support/test-logs.js';
import { sleep } from '../support/wait.js';

const hex = randomBytes(4).toString('hex');

// Distinctive passwords: [A-Za-z0-9-] only, so JSON log escaping cannot hide one from the search.
const PW = {
  md5: `Sek-md5-${hex}-Q7xL`,
  scram: `Sek-scram-${hex}-Zp3M`,
  plain: `Sek-plain-${hex}-Hv9K`,
  aq: `Sek-authquery-${hex}-Tw2R`,
  db: `Sek-dbconn-${hex}-Jm5N`,
  dbWrong: `Sek-dbwrong-${hex}-Ux8B`,
  wrong: `Sek-wrong-${hex}-Ye4C`,
  admin: `Sek-admin-${hex}-Fa6D`,
  stats: `Sek-stats-${hex}-Gb1E`,
  user: `Sek-user-${hex}-Kc0F`,
};

/** Every string that must never appear in a log line, with a label for the failure message. Each
 * is also handed to the suite-wide search of every pooler's log (test/zz-last/no-secrets-in-logs). */
const secrets = new Map<string, string>();
function secret(label: string, value: string): void {
  if (value.length < 8) return;
  secrets.set(value, label);
  noteSecret(`security.test: ${label}`, value);
}

/** Messages up to ReadyForQuery (or the end), or up to the first ErrorResponse when `stopAtError`. */
function collect(raw: RawConn, stopAtError = false): Promise<BackendMessage[]> {
  return raw.until('Z', { onError: stopAtError ? 'stop' : 'keep', onEnd: 'return' });
}

/** md5 login by hand; returns the connection and what it sent. */
async function md5Login(port: number, user: string, password: string, database = 'p0'): Promise<{ raw: RawConn; sent: string; result: BackendMessage[] }> {
  const { conn: raw, sent } = await md5Start(port, user, password, database);
  return { raw, sent, result: await collect(raw, true) };
}

/** SCRAM-SHA-256 login by hand; returns every secret value it derived or sent. */
async function scramLogin(port: number, user: string, password: string, database = 'p0') {
  const raw = await RawConn.connect(port);
  raw.send(startupPacket({ user, database }));
  const sasl = await raw.next();
  assert.ok(sasl !== null && sasl.type === 'R' && sasl.body.readInt32BE(0) === 10, `expected AuthenticationSASL for ${user}, got ${sasl?.type}`);
  const sent = await scramExchange(raw, password);
  const result = await collect(raw, true);
  return { raw, result, salted: sent.salted.toString('base64'), clientKey: sent.clientKey.toString('base64'), proof: sent.proof.toString('base64') };
}

async function pgLogin(port: number, user: string, password: string, database = 'p0'): Promise<void> {
  await queryOnce({ host: '127.0.0.1', port, user, password, database, connectionTimeoutMillis: 10_000 }, 'SELECT 1');
}

function failedWith(result: BackendMessage[], code: string): void {
  const e = result.find((m) => m.type === 'E');
  assert.ok(e, `no ErrorResponse; saw ${result.map((m) => m.type).join('')}`);
  assert.equal(errorFields(e).C, code, JSON.stringify(errorFields(e)));
}

function succeeded(result: BackendMessage[]): void {
  const e = result.find((m) => m.type === 'E');
  assert.ok(!e, e === undefined ? '' : JSON.stringify(errorFields(e)));
  assert.equal(result.at(-1)?.type, 'Z');
}

/** A SCRAM verifier, its StoredKey and its ServerKey, as secrets. */
function scramVerifierSecrets(label: string, verifier: string): void {
  secret(`${label} verifier`, verifier);
  const parts = scramSecretParts(verifier);
  assert.ok(parts, `not a SCRAM verifier: ${verifier}`);
  secret(`${label} StoredKey`, parts.storedKey);
  secret(`${label} ServerKey`, parts.serverKey);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ------------------------------------------------------------------------------------------------

describe('security', () => {
  let cluster: Cluster | undefined;
  const poolers: Pooler[] = [];
  let failed = false;
  const c = (): Cluster => {
    assert.ok(cluster, 'cluster did not start');
    return cluster;
  };
  const verifiers = new Map<string, string>();

  before(async () => {
    cluster = await startCluster({
      name: 'security',
      hba: `host all sec_md5 all md5
host all sec_scram all scram-sha-256
host all sec_plain all scram-sha-256
host all sec_aq all scram-sha-256
host all sec_db all scram-sha-256
host all all all trust
`,
    });
    await cluster.query(`SET password_encryption = 'md5'; CREATE ROLE sec_md5 LOGIN PASSWORD '${PW.md5}'`);
    await cluster.query(`SET password_encryption = 'scram-sha-256';
      CREATE ROLE sec_scram LOGIN PASSWORD '${PW.scram}';
      CREATE ROLE sec_plain LOGIN PASSWORD '${PW.plain}';
      CREATE ROLE sec_aq LOGIN PASSWORD '${PW.aq}';
      CREATE ROLE sec_db LOGIN PASSWORD '${PW.db}'`);
    const rows = await cluster.query<{ rolname: string; rolpassword: string }>(
      "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'sec\\_%'",
    );
    for (const r of rows.rows) verifiers.set(r.rolname, r.rolpassword);
  });
  afterEach((t) => {
    if ('passed' in t && !t.passed) failed = true;
  });
  after(async () => {
    if (failed) for (const p of poolers) console.error(`--- pooler ${p.port} ---\n${p.logs().slice(-60).join('\n')}`);
    await Promise.all(poolers.map((p) => p.stop()));
    await cluster?.destroy();
  });

  it('never logs a password, an md5 hash, a SCRAM verifier, key or proof (md5, SCRAM, cleartext, auth_query, [databases] passwords), at verbose=2', async () => {
    const hbaFile = `${c().dataDir}/../security-pooler-hba.conf`;
    fs.writeFileSync(
      hbaFile,
      `host all sec_md5 127.0.0.1/32 md5
host all sec_scram 127.0.0.1/32 scram-sha-256
host all sec_plain 127.0.0.1/32 password
host all sec_aq 127.0.0.1/32 scram-sha-256
host all ghost 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 md5
`,
    );
    const p = await startPooler(
      {
        pgbouncer: {
          auth_type: 'hba',
          auth_hba_file: hbaFile,
          auth_user: 'postgres',
          pool_mode: 'transaction',
          verbose: '2',
          log_connections: '1',
          log_disconnections: '1',
          admin_users: 'sec_md5',
        },
        databases: {
          p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
          pdb: `host=127.0.0.1 port=${c().port} dbname=p1 user=sec_db password=${PW.db}`,
          pbad: `host=127.0.0.1 port=${c().port} dbname=p1 user=sec_db password=${PW.dbWrong}`,
        },
      },
      {
        userlist: {
          postgres: '',
          sec_md5: PW.md5,
          sec_scram: verifiers.get('sec_scram') ?? '',
          sec_plain: PW.plain,
        },
      },
    );
    poolers.push(p);

    // Everything secret in this exchange.
    for (const [label, pw] of Object.entries(PW)) secret(`password ${label}`, pw);
    for (const [user, pw] of [['sec_md5', PW.md5], ['sec_md5', PW.wrong], ['sec_scram', PW.wrong], ['sec_plain', PW.plain], ['sec_db', PW.db], ['sec_db', PW.dbWrong]] as const) {
      secret(`md5 hash of ${user}`, md5hex(pw + user));
    }
    for (const [role, v] of verifiers) if (v.startsWith('SCRAM')) scramVerifierSecrets(role, v);
    secret('sec_md5 rolpassword', verifiers.get('sec_md5') ?? '');

    // md5: right (raw and driver), wrong, unknown user.
    const md5ok = await md5Login(p.port, 'sec_md5', PW.md5);
    succeeded(md5ok.result);
    secret('md5 response (right)', md5ok.sent);
    md5ok.raw.destroy();
    await pgLogin(p.port, 'sec_md5', PW.md5);
    const md5bad = await md5Login(p.port, 'sec_md5', PW.wrong);
    failedWith(md5bad.result, '28P01');
    secret('md5 response (wrong)', md5bad.sent);
    md5bad.raw.destroy();
    // With auth_user set, a user auth_query does not find is told so before any exchange
    // (PgBouncer's "no such user"), so no password of it is ever sent.
    for (const user of ['nobody_here', 'ghost']) await assert.rejects(pgLogin(p.port, user, PW.wrong), /no such user$/);

    // SCRAM: right (pass-through to PostgreSQL), wrong.
    for (const [user, pw, ok] of [['sec_scram', PW.scram, true], ['sec_scram', PW.wrong, false], ['sec_aq', PW.aq, true], ['sec_aq', PW.wrong, false]] as const) {
      const s = await scramLogin(p.port, user, pw);
      if (ok) succeeded(s.result);
      else failedWith(s.result, '28P01');
      secret(`SaltedPassword ${user}/${ok}`, s.salted);
      secret(`ClientKey ${user}/${ok}`, s.clientKey);
      secret(`ClientProof ${user}/${ok}`, s.proof);
      const final = s.result.find((m) => m.type === 'R' && m.body.readInt32BE(0) === 12);
      if (final !== undefined) secret(`ServerSignature ${user}`, final.body.toString('utf8', 4).replace(/^v=/, ''));
      s.raw.destroy();
    }
    await pgLogin(p.port, 'sec_scram', PW.scram);
    await pgLogin(p.port, 'sec_aq', PW.aq);

    // Cleartext (`password` in hba): right, wrong.
    await pgLogin(p.port, 'sec_plain', PW.plain);
    await assert.rejects(pgLogin(p.port, 'sec_plain', PW.wrong), /password authentication failed/);

    // [databases] passwords: one that works, one PostgreSQL refuses.
    await pgLogin(p.port, 'sec_md5', PW.md5, 'pdb');
    await assert.rejects(pgLogin(p.port, 'sec_md5', PW.md5, 'pbad'));

    // A console session (sec_md5 is an admin): SHOW CONFIG and a RELOAD, which log and echo.
    const admin = await md5Login(p.port, 'sec_md5', PW.md5, 'pgbouncer');
    succeeded(admin.result);
    for (const sql of ['SHOW CONFIG', 'SHOW DATABASES', 'SHOW USERS', 'SHOW CLIENTS', 'SHOW SERVERS', 'RELOAD']) {
      admin.raw.send(msg('Q', cstr(sql)));
      const out = (await collect(admin.raw)).map((m) => m.body.toString('latin1')).join('\n');
      for (const [value, label] of secrets) assert.ok(!out.includes(value), `${sql} shows ${label}`);
    }
    admin.raw.destroy();
    p.reload();
    await p.waitForLog(/configuration reloaded|re-reading config/);

    // Lines are written at the end of a loop turn, and stdout reaches us through a pipe: give it a
    // moment, then search every line.
    await sleep(500);
    const lines = p.logs();
    assert.ok(lines.length > 20, `only ${lines.length} log lines: was verbose=2 applied?`);
    assert.ok(lines.some((l) => ['DEBUG', 'NOISE'].includes(parseLogLine(l).level)), 'no debug lines at verbose=2');
    const leaks: string[] = [];
    for (const line of lines) {
      for (const [value, label] of secrets) if (line.includes(value)) leaks.push(`${label}: ${line.slice(0, 300)}`);
    }
    assert.deepEqual(leaks, [], `secrets in the log:\n${leaks.join('\n')}`);
    console.log(`security: ${lines.length} log lines searched for ${secrets.size} secret values`);
  });

  describe('the admin console', () => {
    let p: Pooler | undefined;
    const port = (): number => {
      assert.ok(p, 'pooler did not start');
      return p.port;
    };

    before(async () => {
      await c().query('CREATE ROLE secuser LOGIN');
      p = await startPooler(
        {
          pgbouncer: { auth_type: 'md5', pool_mode: 'transaction', admin_users: 'secadmin', stats_users: 'secstats' },
          databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0`, pdb: `host=127.0.0.1 port=${c().port} dbname=p1 user=sec_db password=${PW.db}` },
        },
        { userlist: { secadmin: PW.admin, secstats: PW.stats, secuser: PW.user } },
      );
      poolers.push(p);
    });

    async function clientId(admin: RawConn, user: string): Promise<string> {
      admin.send(msg('Q', cstr('SHOW CLIENTS')));
      const out = await collect(admin);
      const desc = out.find((m) => m.type === 'T');
      assert.ok(desc);
      // RowDescription: int16 count, then per column a name and 18 bytes.
      const names: string[] = [];
      let pos = 2;
      for (let i = 0; i < desc.body.readInt16BE(0); i++) {
        const z = desc.body.indexOf(0, pos);
        names.push(desc.body.toString('utf8', pos, z));
        pos = z + 1 + 18;
      }
      for (const cells of rows(out)) {
        if (cells[names.indexOf('user')] === user && cells[names.indexOf('database')] === 'p0') return cells[names.indexOf('id')] ?? '';
      }
      throw new Error(`no client of ${user} in SHOW CLIENTS`);
    }

    it('refuses a console login from a user that is neither admin nor stats user (28000)', async () => {
      const r = await md5Login(port(), 'secuser', PW.user, 'pgbouncer');
      failedWith(r.result, '28000');
      r.raw.destroy();
    });

    it('refuses every control command from a stats user (42501), KILL_CLIENT of another client included; an admin may', async () => {
      const victim = await md5Login(port(), 'secuser', PW.user);
      succeeded(victim.result);
      const stats = await md5Login(port(), 'secstats', PW.stats, 'pgbouncer');
      succeeded(stats.result);
      const admin = await md5Login(port(), 'secadmin', PW.admin, 'pgbouncer');
      succeeded(admin.result);
      try {
        const id = await clientId(admin.raw, 'secuser');
        for (const sql of [`KILL_CLIENT ${id}`, 'KILL p0', 'KILL', 'PAUSE', 'SUSPEND', 'DISABLE p0', 'RECONNECT', 'RELOAD', 'SHUTDOWN', 'WAIT_CLOSE', 'RESUME', 'ENABLE p0', 'SET max_client_conn = 1']) {
          stats.raw.send(msg('Q', cstr(sql)));
          const out = await collect(stats.raw);
          failedWith(out, '42501');
        }
        // The victim still works after the refused KILL_CLIENT.
        victim.raw.send(msg('Q', cstr('SELECT 1')));
        succeeded(await collect(victim.raw));
        // The same command from an admin does disconnect it: the refusal was about rights.
        admin.raw.send(msg('Q', cstr(`KILL_CLIENT ${id}`)));
        succeeded(await collect(admin.raw));
        const gone = await collect(victim.raw, true);
        failedWith(gone, '57P01');
      } finally {
        victim.raw.destroy();
        stats.raw.destroy();
        admin.raw.destroy();
      }
    });

    it('shows a stats user no password or secret (SHOW DATABASES, USERS, CONFIG, POOLS, CLIENTS, SERVERS)', async () => {
      await pgLogin(port(), 'secuser', PW.user, 'pdb');
      const stats = await md5Login(port(), 'secstats', PW.stats, 'pgbouncer');
      try {
        for (const sql of ['SHOW DATABASES', 'SHOW USERS', 'SHOW CONFIG', 'SHOW POOLS', 'SHOW CLIENTS', 'SHOW SERVERS', 'SHOW STATS', 'SHOW HELP']) {
          stats.raw.send(msg('Q', cstr(sql)));
          const out = (await collect(stats.raw)).map((m) => m.body.toString('latin1')).join('\n');
          for (const [label, value] of [['[databases] password', PW.db], ['secuser password', PW.user], ['secuser md5', md5hex(PW.user + 'secuser')], ['admin password', PW.admin]] as const) {
            assert.ok(!out.includes(value), `${sql} shows the ${label}`);
          }
        }
      } finally {
        stats.raw.destroy();
      }
    });
  });

  it('does not let a client use another client\'s prepared statement by its server-side name (transaction mode)', async () => {
    const p = await startPooler(
      { pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1' }, databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` } },
      { userlist: { alice: '', mallory: '' } },
    );
    poolers.push(p);
    await c().query('DO $$ BEGIN CREATE ROLE alice LOGIN; CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$');
    const login = async (user: string) => {
      const raw = await RawConn.connect(p.port);
      raw.send(startupPacket({ user, database: 'p0' }));
      succeeded(await collect(raw));
      return raw;
    };
    const alice = await login('alice');
    try {
      alice.send(Buffer.concat([msg('P', cstr('mine'), cstr("SELECT 'alice-secret-row' AS s"), [0, 0]), msg('S')]));
      succeeded(await collect(alice));
      // One server (pool size 1): the statement now lives on the server mallory gets next. A
      // name mallory never prepared closes mallory, as PgBouncer does; so one login per guess.
      for (let n = 1; n <= 30; n++) {
        const mallory = await login('mallory');
        mallory.send(Buffer.concat([msg('B', cstr(''), cstr(`PGPOOL_${n}`), [0, 0, 0, 0, 0, 0]), msg('E', cstr(''), int32(0)), msg('S')]));
        const out = await collect(mallory);
        mallory.destroy();
        const rows = out.filter((m) => m.type === 'D').map((m) => m.body.toString('latin1'));
        assert.ok(!rows.some((r) => r.includes('alice-secret-row')), `mallory executed alice's statement as PGPOOL_${n}`);
        failedWith(out, '08P01');
      }
    } finally {
      alice.destroy();
      await p.stop();
    }
  });

  it('an expired role (VALID UNTIL in the past) cannot log in through auth_query, even with its password (CVE-2025-2291)', async () => {
    await c().query(`SET password_encryption = 'scram-sha-256'; CREATE ROLE sec_expired LOGIN PASSWORD '${PW.aq}-exp' VALID UNTIL '2000-01-01'; CREATE ROLE sec_valid LOGIN PASSWORD '${PW.aq}-ok' VALID UNTIL 'infinity'`);
    const p = await startPooler(
      { pgbouncer: { auth_type: 'scram-sha-256', auth_user: 'postgres', pool_mode: 'session' }, databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` } },
      { userlist: { postgres: '' } },
    );
    poolers.push(p);
    try {
      const expired = await scramLogin(p.port, 'sec_expired', `${PW.aq}-exp`);
      failedWith(expired.result, '28P01');
      expired.raw.destroy();
      // The control: the same path with a role whose VALID UNTIL is in the future.
      const valid = await scramLogin(p.port, 'sec_valid', `${PW.aq}-ok`);
      succeeded(valid.result);
      valid.raw.destroy();
    } finally {
      await p.stop();
    }
  });

  // ----------------------------------------------------------------------------------------------
  // Timing: unknown user vs wrong password

  describe('unknown user and wrong password are indistinguishable by timing (medians over 200 tries each)', () => {
    // What is timed is the pooler's part only: from each client message to the pooler's answer
    // (startup → authentication request → … → ErrorResponse), summed. The client's own work (PBKDF2)
    // and the TCP connect are left out, so a difference in the pooler's work is not drowned.
    //
    // The bound is loose on purpose: loopback round trips of ~0.1 ms jitter by tens of percent on a
    // shared CI machine, GC pauses land anywhere, and tries are interleaved so drift hits both sides.
    // A real leak is an order of magnitude: a PBKDF2 at 4096 iterations (2–5 ms) done for one side
    // only makes the ratio 10 or more. 0.5–2.0 never fails on noise and always on such a leak.
    // Absolute times are never asserted.
    const TRIES = 200;
    let t1: Pooler | undefined;
    let t2: Pooler | undefined;

    before(async () => {
      const dbs = { p0: `host=127.0.0.1 port=${c().port} dbname=p0` };
      t1 = await startPooler({ pgbouncer: { auth_type: 'md5', log_connections: '0', log_pooler_errors: '0' }, databases: dbs }, { userlist: { tu_md5: md5Secret('tu_md5', `right-pw-${hex}`) } });
      t2 = await startPooler(
        { pgbouncer: { auth_type: 'scram-sha-256', log_connections: '0', log_pooler_errors: '0' }, databases: dbs },
        { userlist: { tu_scram: scramSecret(`right-pw-${hex}`), tu_plain: `right-pw-${hex}` } },
      );
      poolers.push(t1, t2);
    });

    /**
     * The pooler's time for one failed login, in ms: from each message sent to the pooler's answer,
     * summed. After the startup packet, `answer` goes on through `ask`; its last reply must be the
     * ErrorResponse 28P01.
     */
    async function timedFailure(port: number, user: string, answer: (ask: (m: Buffer) => Promise<BackendMessage | null>) => Promise<BackendMessage | null>): Promise<number> {
      const raw = await RawConn.connect(port);
      let total = 0;
      const ask = async (m: Buffer): Promise<BackendMessage | null> => {
        const t = performance.now();
        raw.send(m);
        const reply = await raw.next();
        total += performance.now() - t;
        return reply;
      };
      try {
        const req = await ask(startupPacket({ user, database: 'p0' }));
        assert.equal(req?.type, 'R');
        const e = await answer(ask);
        assert.equal(e?.type, 'E');
        assert.equal(errorFields(e.body).C, '28P01');
        return total;
      } finally {
        raw.destroy();
      }
    }

    /** The pooler's time for one failed md5 login (a random response), in ms. */
    const md5Try = (port: number, user: string): Promise<number> =>
      timedFailure(port, user, (ask) => ask(msg('p', cstr(`md5${randomBytes(16).toString('hex')}`))));

    /** The pooler's time for one failed SCRAM login (a random proof), in ms. */
    const scramTry = (port: number, user: string): Promise<number> =>
      timedFailure(port, user, async (ask) => {
        const first = Buffer.from(`n,,n=,r=${randomBytes(18).toString('base64')}`);
        const cont = await ask(msg('p', cstr('SCRAM-SHA-256'), int32(first.length), first));
        assert.ok(cont !== null && cont.type === 'R' && cont.body.readInt32BE(0) === 11);
        const nonce = /r=([^,]+)/.exec(cont.body.toString('utf8', 4))?.[1] ?? '';
        return ask(msg('p', `c=biws,r=${nonce},p=${randomBytes(32).toString('base64')}`));
      });

    async function compare(name: string, attempt: (user: string) => Promise<number>, known: string): Promise<void> {
      for (let i = 0; i < 20; i++) await attempt(i % 2 === 0 ? known : `ghost_${i}`); // warm-up
      const unknown: number[] = [];
      const wrong: number[] = [];
      for (let i = 0; i < TRIES; i++) {
        // Alternate the order, and a new unknown name each time (no cache can help either side).
        if (i % 2 === 0) {
          unknown.push(await attempt(`ghost_${hex}_${i}`));
          wrong.push(await attempt(known));
        } else {
          wrong.push(await attempt(known));
          unknown.push(await attempt(`ghost_${hex}_${i}`));
        }
      }
      const ratio = median(unknown) / median(wrong);
      console.log(`security: ${name}: median unknown user ${median(unknown).toFixed(3)} ms, wrong password ${median(wrong).toFixed(3)} ms, ratio ${ratio.toFixed(2)}`);
      assert.ok(ratio >= 0.5 && ratio <= 2.0, `${name}: unknown/wrong median ratio ${ratio.toFixed(2)} (unknown ${median(unknown).toFixed(3)} ms, wrong ${median(wrong).toFixed(3)} ms)`);
    }

    it('md5 (md5 secret in auth_file)', async () => {
      assert.ok(t1);
      await compare('md5', (u) => md5Try(t1!.port, u), 'tu_md5');
    });

    it('scram-sha-256 (SCRAM verifier in auth_file)', async () => {
      assert.ok(t2);
      await compare('scram-sha-256, verifier', (u) => scramTry(t2!.port, u), 'tu_scram');
    });

    it('scram-sha-256 (plaintext password in auth_file)', async () => {
      assert.ok(t2);
      await compare('scram-sha-256, plaintext secret', (u) => scramTry(t2!.port, u), 'tu_plain');
    });
  });

  // ----------------------------------------------------------------------------------------------
  // Shown elsewhere: these checks keep the references in docs/security.md honest.

  for (const [file, title, what] of [
    ['tls-client.test.ts', 'mode 0644: startup fails with exit 1 naming the file and its mode; --check reports it', 'private key files with loose modes are refused'],
    ['auth.test.ts', 'does not let a client search_path steer auth_query', 'auth_query cannot be steered by a client search_path (CVE-2025-12819)'],
  ] as const) {
    it(`${what}: shown by ${file} › "${title}"`, () => {
      const src = fs.readFileSync(fileURLToPath(new URL(`../../../test/integration/${file}`, import.meta.url)), 'utf8');
      assert.ok(src.includes(`it('${title}'`), `${file} no longer has the test "${title}"`);
    });
  }
});
