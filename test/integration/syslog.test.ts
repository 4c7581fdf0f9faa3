// syslog = 1: log lines of level LOG and up go to the syslog daemon as RFC 3164 datagrams, with
// syslog_ident and syslog_facility, as PgBouncer's syslog(3) sends them. The test is the daemon: a
// unix datagram socket of its own (a small Python receiver, as Node cannot open one), named by
// syslog_socket. A reload changes ident and facility or turns syslog off, and a daemon that goes
// away and comes back loses lines but never stops the pooler.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { connectClient } from '../support/pg-client.js';
import { USERS } from '../support/pg-cluster.js';
import type { IniSections } from '../support/pooler.js';
import { usePooler, useSetup } from '../support/suite.js';
import { sleep, waitFor } from '../support/wait.js';
import { nativeFunction } from '../../src/net/native.js';

const addon = nativeFunction('dgramConnect', 'syslog cannot be tested');
const SKIP = 'error' in addon ? addon.error : false;

const USER = USERS.trust.name;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-syslog-'));
const SOCKET = path.join(dir, 'log.sock');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Prints every datagram received on argv[1] as one line (JSON string), until killed. */
const RECEIVER = `
import json, os, socket, sys
path = sys.argv[1]
if os.path.exists(path): os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print(json.dumps("ready"), flush=True)
while True:
    print(json.dumps(s.recv(65536).decode()), flush=True)
`;

class Receiver {
  readonly lines: string[] = [];
  private constructor(private readonly child: ChildProcess) {}

  static async start(): Promise<Receiver> {
    const child = spawn('python3', ['-c', RECEIVER, SOCKET], { stdio: ['ignore', 'pipe', 'inherit'] });
    const r = new Receiver(child);
    readline.createInterface({ input: child.stdout! }).on('line', (l) => r.lines.push(JSON.parse(l) as string));
    await waitFor('the receiver to bind', async () => r.lines[0] === 'ready', 10_000);
    r.lines.length = 0;
    return r;
  }

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }

  async waitFor(pattern: RegExp, timeoutMs = 5_000): Promise<string> {
    let found: string | undefined;
    await waitFor(`a datagram matching ${pattern}`, async () => (found = this.lines.find((l) => pattern.test(l))) !== undefined, timeoutMs)
      .catch((e: Error) => assert.fail(`${e.message}; got:\n${this.lines.join('\n')}`));
    return found!;
  }
}

const setup = useSetup({ cluster: { name: 'syslog' } });
const { c } = setup;

function ini(extra: Record<string, string>): IniSections {
  return {
    pgbouncer: {
      auth_type: 'trust', pool_mode: 'transaction', syslog: '1', syslog_ident: 'pgtest', syslog_facility: 'local3',
      syslog_socket: SOCKET, verbose: '2', ...extra,
    },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
  };
}

async function login(port: number): Promise<void> {
  const client = await connectClient({ host: '127.0.0.1', port, user: USER, database: 'p0' });
  await client.query('SELECT 1');
  await client.end();
}

describe('syslog', { skip: SKIP }, () => {
  let receiver: Receiver | undefined;
  // The daemon is there before the pooler starts, as a system's is.
  before(async () => {
    receiver = await Receiver.start();
  });
  const { p } = usePooler({
    ini: () => ini({}),
    dumpLogs: { clusters: () => [setup.cluster], poolerLines: 100 },
  });
  after(async () => receiver?.stop());

  it('sends LOG lines and up as RFC 3164 datagrams with syslog_ident, syslog_facility and the pid', async () => {
    await login(p().port);
    // local3 (19) * 8 + info (6) = 158.
    const line = await receiver!.waitFor(/login attempt: db=p0/);
    assert.match(line, new RegExp(`^<158>[A-Z][a-z]{2} [ \\d]\\d \\d{2}:\\d{2}:\\d{2} pgtest\\[${p().pid}\\]: C-0x[0-9a-f]+: p0/${USER}@127\\.0\\.0\\.1:\\d+ login attempt: db=p0 user=${USER} tls=no replication=no$`));
    // A WARNING is severity 4.
    await assert.rejects(connectClient({ host: '127.0.0.1', port: p().port, user: USER, database: 'p0', options: '-d' }));
    assert.match(await receiver!.waitFor(/pooler error: unsupported options/), /^<156>/);
    // verbose = 2 writes DEBUG and NOISE lines to the log, never to syslog (PgBouncer's LOG level).
    assert.ok(p().logs().some((l) => / DEBUG /.test(l)), 'no DEBUG line in the log to compare with');
    assert.ok(!receiver!.lines.some((l) => /^<159>/.test(l)), 'a DEBUG line reached syslog');
  });

  it('keeps the pooler running while the daemon is away, and sends again once it is back', async () => {
    await receiver!.stop();
    for (let i = 0; i < 3; i++) await login(p().port);
    receiver = await Receiver.start();
    await sleep(1_100);
    await login(p().port);
    await receiver.waitFor(/login attempt: db=p0/);
  });

  it('a reload changes ident and facility, and syslog = 0 stops it', async () => {
    await p().writeIni(ini({ syslog_ident: 'renamed', syslog_facility: 'user' }));
    p().reload();
    await p().waitForLog(/configuration reloaded/);
    await login(p().port);
    assert.match(await receiver!.waitFor(/renamed\[/), /^<14>/);
    await p().writeIni(ini({ syslog: '0' }));
    p().reload();
    await sleep(500);
    receiver!.lines.length = 0;
    await login(p().port);
    await sleep(500);
    assert.deepEqual(receiver!.lines, []);
  });
});
