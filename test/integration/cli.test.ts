// The command line as an operator meets it: `node dist/src/main.js` run as a real process with
// real ini files. Version and help, a positional ini as good as -c, --check reporting every
// problem as FILE:LINE with a did-you-mean, a bad config or a busy port refusing to start (exit
// 1, never half-started), the environment-generated config shown with its password masked, and
// SIGTERM / SIGINT ending a quiet pooler with exit 0.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import pg from 'pg';
import { connectClient } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { canConnect, freePort, MAIN_JS, runMain as runMainWith, startPooler } from '../support/pooler.js';
import { runCommand, type RunResult } from '../support/run-cmd.js';
import { required } from '../support/suite.js';
import { keepOutput, noteSecret, saveOutput } from '../support/test-logs.js';
import { sleep } from '../support/wait.js';

const PACKAGE_JSON = fileURLToPath(new URL('../../../package.json', import.meta.url));
const RUN_TIMEOUT_MS = 20_000;

/** The pooler's own environment: only PATH and HOME, so no DATABASE_URL, DB_HOST or
 * setting-named variable (POOL_MODE, …) from the developer's shell can change what it does. */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const k of Object.keys(process.env)) if (k !== 'PATH' && k !== 'HOME') env[k] = undefined;
  return { ...env, ...extra };
}

function runMain(args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> {
  return runMainWith(args, { env: cleanEnv(extraEnv), timeoutMs: RUN_TIMEOUT_MS });
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

interface Spawned {
  child: ChildProcess;
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Start main.js with `args` as a long-running process (positional-ini test). */
function spawnMain(args: string[], cwd: string): Spawned {
  const env: Record<string, string> = {};
  for (const k of ['PATH', 'HOME']) if (process.env[k] !== undefined) env[k] = process.env[k]!;
  const child = spawn(process.execPath, [MAIN_JS, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  keepOutput(child, 'main');
  const output: string[] = [];
  for (const s of [child.stdout, child.stderr]) readline.createInterface({ input: s }).on('line', (l) => output.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })));
  return { child, output, exited };
}

async function waitForPort(port: number, s: Spawned, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void s.exited.then(() => { gone = true; });
  while (!(await canConnect('127.0.0.1', port))) {
    if (gone) throw new Error(`pooler exited before listening:\n${s.output.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`port ${port} not accepting after ${timeoutMs} ms:\n${s.output.join('\n')}`);
    await sleep(50);
  }
}

async function stopWithin(s: Spawned, signal: NodeJS.Signals, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; tookMs: number }> {
  const t0 = Date.now();
  s.child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([s.exited, new Promise<null>((res) => { timer = setTimeout(() => res(null), ms); })]);
  clearTimeout(timer);
  if (r === null) {
    s.child.kill('SIGKILL');
    await s.exited;
    throw new Error(`still running ${ms} ms after ${signal}:\n${s.output.join('\n')}`);
  }
  return { ...r, tookMs: Date.now() - t0 };
}

describe('command line', () => {
  let cluster: Cluster | undefined;
  let dir = '';
  const spawned: Spawned[] = [];
  const c = required(() => cluster, 'cluster');

  /** A complete, valid ini on a fresh port, with its unix socket in the test's temp dir. */
  async function goodIni(name: string): Promise<{ file: string; port: number }> {
    const port = await freePort();
    const file = path.join(dir, name);
    await fs.writeFile(file, [
      '; a small valid configuration',
      '[databases]',
      `p0 = host=127.0.0.1 port=${c().port} dbname=p0`,
      `p1 = host=127.0.0.1 port=${c().port} dbname=p1`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      `unix_socket_dir = ${dir}`,
      'auth_type = trust',
      'pool_mode = transaction',
      '',
    ].join('\n'));
    return { file, port };
  }

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-cli-'));
    cluster = await startCluster({ name: 'cli' });
  });
  let failed = false;
  afterEach((t) => {
    if ('passed' in t && !t.passed) failed = true;
  });
  after(async () => {
    for (const s of spawned) {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
      await s.exited;
      if (failed) console.error(`--- pooler output ---\n${s.output.join('\n')}`);
    }
    await cluster?.destroy();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('prints "pgpool-ts <version>" for -V and exits 0', async () => {
    const { version } = JSON.parse(await fs.readFile(PACKAGE_JSON, 'utf8')) as { version: string };
    for (const flag of ['-V', '--version']) {
      const r = await runMain([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `pgpool-ts ${version}\n`);
    }
  });

  it('prints usage for -h and exits 0', async () => {
    for (const flag of ['-h', '--help']) {
      const r = await runMain([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Usage: /);
      assert.match(r.stdout, /--check/);
    }
  });

  it('refuses an unknown option with exit 1', async () => {
    const r = await runMain(['--no-such-option']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown option --no-such-option/);
  });

  it('takes a positional ini like -c and serves with it', async () => {
    const { file, port } = await goodIni('positional.ini');
    const s = spawnMain([file], dir);
    spawned.push(s);
    await waitForPort(port, s);
    const client = await connectClient({ host: '127.0.0.1', port, user: USERS.trust.name, database: 'p1', connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
    try {
      assert.deepEqual((await client.query('SELECT current_database() AS d')).rows, [{ d: 'p1' }]);
    } finally {
      await client.end();
    }
    const r = await stopWithin(s, 'SIGTERM', 5_000);
    assert.deepEqual([r.code, r.signal], [0, null]);
  });

  it("logs PgBouncer's text lines to a terminal and to a pipe alike, JSON lines with log_format = json", async () => {
    const { file } = await goodIni('terminal.ini');
    // `script` gives the pooler a pseudo-terminal as stdout; timeout stops it after it listened.
    const run = (ini: string) => `timeout -s TERM 3 '${process.execPath}' '${MAIN_JS}' -c '${ini}'`;
    const listening = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] LOG listening on 127\.0\.0\.1:\d+$/;
    const tty = await runCommand('script', ['-qefc', run(file), '/dev/null'], { env: cleanEnv(), timeoutMs: RUN_TIMEOUT_MS });
    saveOutput('main on a terminal', tty.stdout, tty.stderr);
    assert.ok(lines(tty.stdout).some((l) => listening.test(l.replace(/\r$/, ''))), `no "listening on" line:\n${tty.stdout}`);
    const piped = await runCommand('bash', ['-c', run(file)], { env: cleanEnv(), timeoutMs: RUN_TIMEOUT_MS });
    saveOutput('main to a pipe', piped.stdout, piped.stderr);
    assert.ok(lines(piped.stdout).some((l) => listening.test(l)), piped.stdout);
    await fs.appendFile(file, 'log_format = json\n');
    const json = await runCommand('bash', ['-c', run(file)], { env: cleanEnv(), timeoutMs: RUN_TIMEOUT_MS });
    saveOutput('main to a pipe, json', json.stdout, json.stderr);
    const all = lines(json.stdout).map((l) => JSON.parse(l) as { level?: string; msg?: string });
    assert.match(all[0]?.msg ?? '', /^process up: pgpool-ts /);
    const listen = all.find((o) => /^listening on 127\.0\.0\.1:/.test(o.msg ?? ''));
    assert.equal(listen?.level, 'info', json.stdout);
  });

  it('--check -c good.ini prints a one-line summary and exits 0', async () => {
    const { file } = await goodIni('good.ini');
    const r = await runMain(['--check', '-c', file]);
    assert.equal(r.code, 0, r.stderr);
    const out = lines(r.stdout);
    assert.equal(out.length, 1, r.stdout);
    assert.match(out[0] ?? '', /^good\.ini: OK\b/);
    assert.match(out[0] ?? '', /2 databases/);
    assert.equal(r.stderr, '');
  });

  it('--check names a misspelt key as FILE:LINE with a did-you-mean and exits 1', async () => {
    const file = path.join(dir, 'typo.ini');
    await fs.writeFile(file, `[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_prot = 6432\n\n[databases]\np0 = host=127.0.0.1 dbname=p0\n`);
    const r = await runMain(['--check', '-c', file]);
    assert.equal(r.code, 1);
    assert.deepEqual(lines(r.stderr), [`${file}:3: listen_prot: unknown setting (did you mean listen_port?)`]);
    assert.equal(r.stdout, '');
  });

  it('--check prints every problem of a file, each with its line', async () => {
    const file = path.join(dir, 'bad.ini');
    await fs.writeFile(file, [
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      'listen_prot = 6432',
      'pool_mode = sesion',
      'max_client_conn = lots',
      '[databases]',
      'p0 = host=127.0.0.1 dbname=p0',
      '',
    ].join('\n'));
    const r = await runMain(['--check', '-c', file]);
    assert.equal(r.code, 1);
    const out = lines(r.stderr);
    assert.ok(out.includes(`${file}:3: listen_prot: unknown setting (did you mean listen_port?)`), r.stderr);
    assert.ok(out.some((l) => l.startsWith(`${file}:4: pool_mode: `) && l.includes('sesion')), r.stderr);
    assert.ok(out.some((l) => l.startsWith(`${file}:5: max_client_conn: `) && l.includes('lots')), r.stderr);
    assert.equal(out.length, 3, r.stderr);
  });

  it('--check reports a config file that cannot be read, with exit 1', async () => {
    const missing = path.join(dir, 'missing.ini');
    const r = await runMain(['--check', '-c', missing]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot read`));
  });

  it('refuses to start with an unknown setting: exit 1 with the problem, never listening', async () => {
    const port = await freePort();
    const file = path.join(dir, 'unknown.ini');
    await fs.writeFile(file, [
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      `unix_socket_dir = ${dir}`,
      'auth_type = trust',
      'pool_mod = transaction',
      '[databases]',
      `p0 = host=127.0.0.1 port=${c().port} dbname=p0`,
      '',
    ].join('\n'));
    const s = spawnMain(['-c', file], dir);
    spawned.push(s);
    let listened = false;
    const probe = (async () => {
      let done = false;
      void s.exited.then(() => { done = true; });
      while (!done) {
        if (await canConnect('127.0.0.1', port)) listened = true;
        await sleep(20);
      }
    })();
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([s.exited, new Promise<null>((res) => { timer = setTimeout(() => res(null), RUN_TIMEOUT_MS); })]);
    clearTimeout(timer);
    await probe;
    assert.ok(r !== null, `still running with a bad config:\n${s.output.join('\n')}`);
    assert.equal(r.code, 1, s.output.join('\n'));
    assert.ok(s.output.includes(`${file}:6: pool_mod: unknown setting (did you mean pool_mode?)`), s.output.join('\n'));
    assert.equal(listened, false, 'it accepted connections before giving up');
  });

  it('exits 1 with one line when the port is already in use', async () => {
    const busy = net.createServer();
    await new Promise<void>((res) => busy.listen(0, '127.0.0.1', () => res()));
    const addr = busy.address();
    assert.ok(addr !== null && typeof addr === 'object');
    try {
      const file = path.join(dir, 'busy.ini');
      await fs.writeFile(file, [
        '[pgbouncer]',
        'listen_addr = 127.0.0.1',
        `listen_port = ${addr.port}`,
        `unix_socket_dir = ${dir}`,
        'auth_type = trust',
        '[databases]',
        `p0 = host=127.0.0.1 port=${c().port} dbname=p0`,
        '',
      ].join('\n'));
      const r = await runMain(['-c', file]);
      assert.equal(r.timedOut, false, 'still running with its port taken');
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const err = lines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.match(err[0] ?? '', new RegExp(`127\\.0\\.0\\.1:${addr.port}|EADDRINUSE|in use`));
    } finally {
      await new Promise((res) => busy.close(res));
    }
  });

  it('--check with DATABASE_URL and no -c prints the generated ini, password masked, and the summary', async () => {
    noteSecret('cli.test: the password in DATABASE_URL', 's3cret-pw');
    const r = await runMain(['--check'], { DATABASE_URL: 'postgres://appuser:s3cret-pw@db.internal:5433/appdb?application_name=web' });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes('s3cret-pw'), `the password is printed:\n${r.stdout}`);
    assert.match(r.stdout, /^\[pgbouncer\]$/m);
    assert.match(r.stdout, /^\[databases\]$/m);
    const dbLine = lines(r.stdout).find((l) => l.startsWith('appdb ='));
    assert.ok(dbLine, r.stdout);
    for (const part of ['host=db.internal', 'port=5433', 'dbname=appdb', 'user=appuser', 'application_name=web']) {
      assert.ok(dbLine.includes(part), `${part} missing from: ${dbLine}`);
    }
    assert.match(dbLine, /password=\S*\*{3,}/);
    const last = lines(r.stdout).at(-1) ?? '';
    assert.match(last, /OK\b/);
    assert.match(last, /1 database\b/);
  });

  it('exits 0 promptly on SIGTERM with no clients', async () => {
    const p = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    });
    const t0 = Date.now();
    const r = await p.stop('SIGTERM', 5_000);
    const took = Date.now() - t0;
    assert.deepEqual(r, { code: 0, signal: null }, p.logs().join('\n'));
    assert.ok(took < 2_000, `took ${took} ms`);
  });

  it('exits 0 promptly on SIGTERM after a server login failed', async () => {
    // Forced user scramuser with no password anywhere: every server login fails. A failed
    // login must not keep the pooler from shutting down.
    const p = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'session' },
      databases: { nopass: `host=127.0.0.1 port=${c().port} dbname=p0 user=${USERS.scram.name}` },
    });
    const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'nopass', connectionTimeoutMillis: 10_000 });
    client.on('error', () => undefined);
    await assert.rejects(client.connect());
    const t0 = Date.now();
    const r = await p.stop('SIGTERM', 5_000);
    const took = Date.now() - t0;
    assert.deepEqual(r, { code: 0, signal: null }, `after ${took} ms; last lines:\n${p.logs().slice(-5).join('\n')}`);
    assert.ok(took < 2_000, `took ${took} ms`);
  });

  it('exits 0 on SIGINT, closing its idle server connections', async () => {
    const p = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    });
    const client = await connectClient({ host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'p0', connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
    await client.query('SELECT 1');
    await client.end();
    assert.equal((await c().backendPids({ user: USERS.trust.name })).length, 1, 'one idle server connection');
    const t0 = Date.now();
    const r = await p.stop('SIGINT', 5_000);
    const took = Date.now() - t0;
    assert.deepEqual(r, { code: 0, signal: null }, p.logs().join('\n'));
    assert.ok(took < 3_000, `took ${took} ms`);
    // The server connection was closed (Terminate), not left behind.
    const deadline = Date.now() + 5_000;
    while ((await c().backendPids({ user: USERS.trust.name })).length > 0 && Date.now() < deadline) await sleep(50);
    assert.deepEqual(await c().backendPids({ user: USERS.trust.name }), []);
  });
});

describe('packaging', () => {
  const ROOT = path.dirname(PACKAGE_JSON);

  it('package-lock.json names exactly the dependencies of package.json (a stale entry made a fresh npm install rewrite it)', async () => {
    const pkg = JSON.parse(await fs.readFile(PACKAGE_JSON, 'utf8')) as Record<string, unknown>;
    const lock = JSON.parse(await fs.readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, Record<string, unknown>> };
    const root = lock.packages[''] ?? {};
    for (const kind of ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies']) {
      assert.deepEqual(root[kind] ?? {}, pkg[kind] ?? {}, `package-lock.json's ${kind}`);
    }
    // Every package the root names is locked.
    const named = { ...(pkg.dependencies as object), ...(pkg.devDependencies as object) };
    for (const name of Object.keys(named)) assert.ok(lock.packages[`node_modules/${name}`], `${name} is locked`);
  });

  it('what npm installs from git (prepare, then pack) has a runnable bin/ and the native addon sources', async () => {
    // The compiled pooler lives in dist/, which git does not hold: without a prepare build and a
    // files list, an install from git left bin/pgpool-ts.js pointing at nothing.
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-pack-'));
    try {
      const src = path.join(work, 'src');
      for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'README.md', 'src', 'bin', 'native', 'etc']) {
        await fs.cp(path.join(ROOT, entry), path.join(src, entry), { recursive: true, filter: (f) => !f.includes(`${path.sep}build${path.sep}`) });
      }
      await fs.symlink(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'));
      const pack = await runCommand('npm', ['pack', '--silent', '--pack-destination', work], { cwd: src, timeoutMs: 120_000 });
      assert.equal(pack.code, 0, pack.stderr);
      const tarball = path.join(work, pack.stdout.trim().split('\n').pop()!);
      const out = path.join(work, 'installed');
      await fs.mkdir(out);
      const untar = await runCommand('tar', ['-xzf', tarball, '-C', out]);
      assert.equal(untar.code, 0, untar.stderr);
      const installed = path.join(out, 'package');
      for (const f of ['bin/pgpool-ts.js', 'dist/src/main.js', 'native/build.mjs', 'native/peercred/peercred.c', 'etc/pgbouncer.ini']) {
        await fs.access(path.join(installed, f));
      }
      await fs.symlink(path.join(ROOT, 'node_modules'), path.join(installed, 'node_modules'));
      const version = await runCommand(process.execPath, [path.join(installed, 'bin/pgpool-ts.js'), '-V'], { timeoutMs: RUN_TIMEOUT_MS });
      assert.equal(version.code, 0, version.stderr);
      assert.match(version.stdout, /^pgpool-ts \d+\.\d+\.\d+/);
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
  });
});
