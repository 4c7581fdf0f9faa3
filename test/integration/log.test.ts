// The pooler's log as PgBouncer's users read it (issue #11): `logfile` in PgBouncer's text format
// with its words, the same events as JSON lines under `log_format = json`, `-q` silencing stdout
// only, and the order that tail -f, fail2ban and PgBouncer's own test suite rely on: the line
// saying why a client is refused is in the file when the client receives the error, not a moment
// later. Each case is repeated, because a line written late shows up only now and then.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cstr, msg, startupPacket } from '../support/bytes.js';
import { USERS } from '../support/pg-cluster.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { parseLogLine, useSetup } from '../support/suite.js';
import { errorFields, md5Response } from '../support/raw-client.js';

const ROUNDS = 30;
const READ_TIMEOUT_MS = 5_000;

const setup = useSetup({ cluster: { name: 'log' }, dumpLogs: { clusterLines: 100 } });
const c = setup.c;

function ini(extra: Record<string, string> = {}): IniSections {
  return {
    // server_login_retry = 0: each client of `gone` gets a server login of its own, refused at once,
    // rather than waiting for the retry after the last refusal (PgBouncer's rule for a pool that
    // never had a server).
    pgbouncer: { auth_type: 'md5', logfile: 'pooler.log', server_login_retry: '0', ...extra },
    databases: {
      p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
      // PostgreSQL has no such database: the server login fails with its FATAL.
      gone: `host=127.0.0.1 port=${c().port} dbname=no_such_pg_db`,
    },
  };
}

async function withPooler(extra: Record<string, string>, body: (p: Pooler, logfile: string) => Promise<void>): Promise<void> {
  const p = await startPooler(ini(extra), { userlist: { [USERS.md5.name]: USERS.md5.password, [USERS.trust.name]: '' } });
  try {
    await body(p, path.join(p.dir, 'pooler.log'));
  } finally {
    await p.stop();
  }
}

interface Refusal {
  /** The client's own port: its lines in the log carry it. */
  readonly port: number;
  /** The ErrorResponse's message. */
  readonly error: string;
  /** The logfile as it was the moment the error arrived. */
  readonly logAtError: string;
}

/**
 * Log in as `user` to `db` (answering an md5 challenge with `password`) and read the logfile
 * synchronously in the same tick the ErrorResponse arrives, before anything else can run.
 */
function refusedLogin(p: Pooler, logfile: string, user: string, db: string, password: string): Promise<Refusal> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: p.host, port: p.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no ErrorResponse within ${READ_TIMEOUT_MS} ms`));
    }, READ_TIMEOUT_MS);
    let buf = Buffer.alloc(0);
    sock.on('error', reject);
    sock.on('connect', () => sock.write(startupPacket({ user, database: db })));
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const type = String.fromCharCode(buf[0]!);
        const body = buf.subarray(5, 1 + buf.readInt32BE(1));
        buf = buf.subarray(1 + buf.readInt32BE(1));
        if (type === 'R' && body.readInt32BE(0) === 5) {
          sock.write(msg('p', cstr(md5Response(user, password, body.subarray(4, 8)))));
        } else if (type === 'E') {
          const logAtError = fs.readFileSync(logfile, 'utf8');
          clearTimeout(timer);
          const port = sock.localPort ?? 0;
          sock.destroy();
          resolve({ port, error: errorFields(body).M ?? '', logAtError });
          return;
        }
      }
    });
  });
}

/** The lines of the logfile text about the client connected from `port`. */
function clientLines(text: string, port: number): string[] {
  return text.split('\n').filter((l) => parseLogLine(l).addr === `127.0.0.1:${port}`).map((l) => parseLogLine(l).msg);
}

describe('the logfile speaks PgBouncer', () => {
  it(`a refused login's closing line and pooler error are in the file when the client gets the error (${ROUNDS} rounds, three reasons)`, async () => {
    await withPooler({}, async (p, logfile) => {
      const cases = [
        { db: 'nosuchdb', user: USERS.md5.name, password: USERS.md5.password, reason: 'no such database: nosuchdb' },
        { db: 'p0', user: USERS.md5.name, password: 'wrong-password', reason: `password authentication failed for user "${USERS.md5.name}"` },
        { db: 'gone', user: USERS.md5.name, password: USERS.md5.password, reason: 'database "no_such_pg_db" does not exist' },
      ];
      for (let round = 0; round < ROUNDS; round++) {
        for (const k of cases) {
          const r = await refusedLogin(p, logfile, k.user, k.db, k.password);
          assert.equal(r.error, k.reason);
          const mine = clientLines(r.logAtError, r.port);
          assert.ok(
            mine.some((m) => /^closing because: (.*) \(age=\d+s\)$/.exec(m)?.[1] === k.reason),
            `round ${round}: no "closing because: ${k.reason}" line for the client at :${r.port} when it got the error; its lines then:\n${mine.join('\n')}`,
          );
          assert.ok(mine.includes(`pooler error: ${k.reason}`), `round ${round}: no pooler error line:\n${mine.join('\n')}`);
          if (k.db === 'gone') {
            // The server's own refusal, in PgBouncer's words, came first.
            assert.match(r.logAtError, /server login failed: FATAL database "no_such_pg_db" does not exist/);
          }
        }
      }
    });
  });

  it('login, server connection and disconnect lines, in the text format', async () => {
    await withPooler({}, async (p, logfile) => {
      const pg = await import('pg');
      const client = new pg.default.Client({ connectionString: p.url(USERS.md5.name, USERS.md5.password, 'p0') });
      await client.connect();
      const port = (client as unknown as { connection: { stream: net.Socket } }).connection.stream.localPort!;
      await client.query('SELECT 1');
      await client.end();
      const text = await waitFor(logfile, (t) => clientLines(t, port).some((m) => m.startsWith('closing because')));
      for (const line of text.trimEnd().split('\n')) {
        assert.match(line, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] (LOG|WARNING|ERROR|FATAL|DEBUG|NOISE) /, line);
      }
      const mine = clientLines(text, port);
      assert.equal(mine[0], `login attempt: db=p0 user=${USERS.md5.name} tls=no replication=no`);
      assert.match(mine.at(-1)!, /^closing because: client close request \(age=\d+s\)$/);
      const client0 = text.split('\n').find((l) => parseLogLine(l).addr === `127.0.0.1:${port}`)!;
      assert.match(parseLogLine(client0).id ?? '', /^C-0x[0-9a-f]+$/);
      const server = text.split('\n').map(parseLogLine).find((l) => /^new connection to server \(from 127\.0\.0\.1:\d+\)$/.test(l.msg));
      assert.ok(server !== undefined, text);
      assert.match(server.id ?? '', /^S-0x[0-9a-f]+$/);
      assert.equal(`${server.db}/${server.user}@${server.addr}`, `p0/${USERS.md5.name}@127.0.0.1:${c().port}`);
      // -q is not given: stdout has the same lines.
      assert.ok(p.logs().some((l) => parseLogLine(l).msg === `login attempt: db=p0 user=${USERS.md5.name} tls=no replication=no`));
    });
  });

  it('a client of the unix socket is `unix(pid):port` in the prefix, as in PgBouncer', async () => {
    await withPooler({}, async (p, logfile) => {
      const pg = await import('pg');
      // This process connects: the pid PgBouncer reads with SO_PEERCRED is ours.
      const client = new pg.default.Client({ host: p.dir, port: p.port, user: USERS.md5.name, password: USERS.md5.password, database: 'p0' });
      await client.connect();
      await client.end();
      const addr = `unix(${process.pid}):${p.port}`;
      const text = await waitFor(logfile, (t) => t.split('\n').some((l) => parseLogLine(l).addr === addr && parseLogLine(l).msg.startsWith('closing because')));
      const mine = text.split('\n').filter((l) => parseLogLine(l).addr === addr).map((l) => parseLogLine(l).msg);
      assert.equal(mine[0], `login attempt: db=p0 user=${USERS.md5.name} tls=no replication=no`);
    });
  });

  it('log_format = json: the same events as JSON lines with the connection as fields', async () => {
    await withPooler({ log_format: 'json' }, async (p, logfile) => {
      const r = await refusedLogin(p, logfile, USERS.md5.name, 'nosuchdb', USERS.md5.password);
      const lines = r.logAtError.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const closing = lines.find((o) => o.addr === `127.0.0.1:${r.port}` && String(o.msg).startsWith('closing because:'));
      assert.ok(closing !== undefined, r.logAtError);
      assert.equal(closing.level, 'info');
      assert.equal(closing.pid, p.pid);
      assert.match(String(closing.id), /^C-0x[0-9a-f]+$/);
      assert.deepEqual([closing.db, closing.user], ['nosuchdb', USERS.md5.name]);
      assert.match(String(closing.msg), /^closing because: no such database: nosuchdb \(age=\d+s\)$/);
    });
  });
});

describe('-q', () => {
  it('silences stdout only: the logfile still gets every line', async () => {
    const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'pgpool-log-q-'));
    try {
      const port = await new Promise<number>((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
          const a = s.address() as net.AddressInfo;
          s.close(() => resolve(a.port));
        });
      });
      const logfile = path.join(dir, 'q.log');
      fs.writeFileSync(path.join(dir, 'q.ini'), `[databases]\np0 = host=127.0.0.1 port=${c().port}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nunix_socket_dir = ${dir}\nauth_type = trust\nlogfile = ${logfile}\n`);
      const { spawn } = await import('node:child_process');
      const { MAIN_JS } = await import('../support/pooler.js');
      const child = spawn(process.execPath, [MAIN_JS, '-q', path.join(dir, 'q.ini')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(logfile, (t) => t.includes('listening on'));
      child.kill('SIGTERM');
      await new Promise((r) => child.once('close', r));
      assert.equal(out, '', 'nothing on stdout or stderr');
      const text = fs.readFileSync(logfile, 'utf8');
      assert.match(text, /LOG got SIGTERM, shutting down, waiting for all clients disconnect\n/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The file's text once `ok` accepts it (it is written at the end of an event-loop turn). */
async function waitFor(file: string, ok: (text: string) => boolean, timeoutMs = 5_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (ok(text)) return text;
    if (Date.now() > deadline) throw new Error(`${file} did not get the expected lines within ${timeoutMs} ms:\n${text}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
