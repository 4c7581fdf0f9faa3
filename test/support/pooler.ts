// The real pooler as a child process (`node dist/src/main.js -c <ini>`), driven over real sockets
// as a user would: generated ini + userlist in a private temp dir, readiness = the TCP port
// accepts, shutdown by signal. Its stdout/stderr are kept as lines for assertions and for dumping
// when a test fails, and written to a log file of the run (test-logs.ts), with the passwords and
// secrets of its ini and auth_file noted, for the run's last test to search every log for them.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runCommand, type RunOptions, type RunResult } from './run-cmd.js';
import { noteAuthFile, noteIniPasswords, OutputLog, saveOutput } from './test-logs.js';

/** `{ section: { key: value } }`, written as a pgbouncer.ini. */
export type IniSections = Record<string, Record<string, string>>;

export interface PoolerOptions {
  /** auth_file: raw text, or user → secret (plain, `md5…` or `SCRAM-SHA-256$…`). With an object
   * ini, `[pgbouncer] auth_file` points at it unless the ini sets its own. */
  userlist?: string | Record<string, string>;
  /** Extra environment for the child (merged over ours). */
  env?: Record<string, string>;
  /** How long the port may take to accept; default 10 s. */
  readyTimeoutMs?: number;
  /** Entry script to run instead of dist/src/main.js (the harness test uses a stand-in). */
  main?: string;
  /** A command that execs the pooler's (e.g. setpriv dropping a capability); its pid is the pooler's. */
  wrap?: readonly string[];
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Pooler {
  readonly pid: number;
  readonly host: string;
  readonly port: number;
  /** Private temp dir holding the ini, the userlist and the unix socket. */
  readonly dir: string;
  readonly iniPath: string;
  readonly authFile: string;
  /** Resolves when the process exits, however that happens. */
  readonly exited: Promise<ExitStatus>;
  /** postgresql://user:password@host:port/db for pg, postgres.js or psql. */
  url(user: string, password: string, db: string): string;
  /** stdout and stderr lines so far, in arrival order. */
  logs(): string[];
  /** First line (already seen or yet to come) matching `pattern`; rejects after `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Rewrite the ini in place (an object ini keeps this pooler's port and dirs); pair with reload(). */
  writeIni(ini: string | IniSections): Promise<void>;
  /** SIGHUP: PgBouncer's online config reload. */
  reload(): void;
  /** Send `signal` and wait for exit; SIGKILL if still alive after `timeoutMs` (default 15 s). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitStatus>;
  kill(): Promise<ExitStatus>;
}

/** The pooler's entry script (compiled). */
export const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const POLL_MS = 50;

/** A port that was free a moment ago on 127.0.0.1 (the kernel picks it; we release it at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr !== null && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('listen(0) returned no port'));
      });
    });
  });
}

/** An IniSections as pgbouncer.ini text. */
export function iniText(ini: IniSections): string {
  return Object.entries(ini)
    .map(([section, kv]) => `[${section}]\n${Object.entries(kv).map(([k, v]) => `${k} = ${v}\n`).join('')}`)
    .join('\n');
}

/** PgBouncer's auth_file: `"user" "secret"`, with `"` doubled inside quotes. */
function serializeUserlist(users: Record<string, string>): string {
  const q = (s: string) => `"${s.replace(/"/g, '""')}"`;
  return Object.entries(users).map(([u, s]) => `${q(u)} ${q(s)}\n`).join('');
}

/** listen_port of a hand-written ini (PgBouncer's default 6432 when absent). */
function portOf(iniText: string): number {
  const m = /^\s*listen_port\s*=\s*(\d+)/m.exec(iniText);
  return m?.[1] === undefined ? 6432 : Number(m[1]);
}

/** Where to probe: the first listen_addr, with wildcards mapped to loopback; '' when listen_addr
 * is empty (no TCP listener). */
function probeHost(iniText: string): string {
  if (/^\s*listen_addr[ \t]*=[ \t]*$/m.test(iniText)) return '';
  const m = /^\s*listen_addr\s*=\s*([^\s,]+)/m.exec(iniText);
  const first = m?.[1] ?? '127.0.0.1';
  if (first === '*' || first === '0.0.0.0') return '127.0.0.1';
  if (first === '::') return '::1';
  return first;
}

/** Whether `host`:`port` accepts a TCP connection (false after 1 s without an answer); with
 * `host` '', whether the unix socket `path` does. */
export function canConnect(host: string, port: number, path = ''): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = host === '' ? net.connect({ path }) : net.connect({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function keepTempDirs(): boolean {
  return process.env.PGPOOL_TEST_KEEP === '1';
}

/** Last-resort cleanup: poolers a test forgot (or could not) stop die with the test process. */
const live = new Set<{ child: ChildProcess; dir: string }>();
// A fatal signal's default action skips 'exit' handlers; exiting explicitly runs them.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => process.exit(128 + os.constants.signals[sig]));
}
process.on('exit', () => {
  for (const p of live) {
    p.child.kill('SIGKILL');
    if (!keepTempDirs()) fs.rmSync(p.dir, { recursive: true, force: true });
  }
});

/** The value of `key` in an ini's text (the first one), or null. */
function iniValue(text: string, key: string): string | null {
  return new RegExp(`^\\s*${key}\\s*=\\s*(.*?)\\s*$`, 'm').exec(text)?.[1] ?? null;
}

/** Note the passwords of an ini file and of the auth_file it names (relative to `baseDir`), as far
 * as they can be read; `source` names them in a failure of the log search. */
function noteConfigSecrets(iniPath: string, baseDir: string, source: string): void {
  let text: string;
  try {
    text = fs.readFileSync(iniPath, 'utf8');
  } catch {
    return;
  }
  noteIniPasswords(text, source);
  const authFile = iniValue(text, 'auth_file');
  if (authFile === null || authFile === '') return;
  try {
    noteAuthFile(fs.readFileSync(path.resolve(baseDir, authFile), 'utf8'), source);
  } catch {
    // Not there (yet): a test about a missing auth_file.
  }
}

/**
 * `node dist/src/main.js <args>` run to completion (--version, --check, a start meant to fail); its
 * output goes to a log of the run, and the passwords of the ini given with -c are noted.
 */
export async function runMain(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const ini = args.indexOf('-c');
  if (ini >= 0 && args[ini + 1] !== undefined) noteConfigSecrets(path.resolve(opts.cwd ?? '.', args[ini + 1]!), opts.cwd ?? '.', 'main.js -c');
  const r = await runCommand(process.execPath, [MAIN_JS, ...args], opts);
  saveOutput(`main ${args.filter((a) => !a.includes('/')).join(' ')}`.slice(0, 40), r.stdout, r.stderr);
  return r;
}

/** The lines of the `logfile` the ini names, when it is a regular file (not /dev/full), into `log`. */
function copyLogfile(iniPath: string, baseDir: string, log: OutputLog): void {
  try {
    const file = iniValue(fs.readFileSync(iniPath, 'utf8'), 'logfile');
    if (file === null || file === '') return;
    const full = path.resolve(baseDir, file);
    if (!fs.statSync(full).isFile()) return;
    log.line(`--- logfile ${full} ---`);
    for (const l of fs.readFileSync(full, 'utf8').split('\n')) if (l !== '') log.line(l);
  } catch {
    // No ini or no logfile left to read.
  }
}

export async function startPooler(ini: string | IniSections, opts: PoolerOptions = {}): Promise<Pooler> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-pooler-'));
  const iniPath = path.join(dir, 'pgpool.ini');
  const authFile = path.join(dir, 'userlist.txt');
  if (opts.userlist !== undefined) {
    await fsp.writeFile(authFile, typeof opts.userlist === 'string' ? opts.userlist : serializeUserlist(opts.userlist));
  }
  // An object ini gets a fresh port, kept across writeIni() so a reload test talks to one address.
  const fixedPort = typeof ini === 'string' ? null : await freePort();

  function render(next: string | IniSections): string {
    if (typeof next === 'string') return next;
    const base: Record<string, string> = {
      listen_addr: '127.0.0.1',
      listen_port: String(fixedPort),
      // A private socket dir: no clash with a system pgbouncer or another test on /tmp/.s.PGSQL.N.
      unix_socket_dir: dir,
    };
    if (opts.userlist !== undefined) base.auth_file = authFile;
    return iniText({ ...next, pgbouncer: { ...base, ...next.pgbouncer } });
  }

  const text = render(ini);
  await fsp.writeFile(iniPath, text);
  const port = portOf(text);
  const host = probeHost(text);

  const source = `pooler :${port}`;
  noteConfigSecrets(iniPath, dir, source);
  const log = new OutputLog(`pooler-${port}`);

  const [command = process.execPath, ...args] = [...(opts.wrap ?? []), process.execPath, opts.main ?? MAIN_JS, '-c', iniPath];
  const child = spawn(command, args, {
    cwd: dir,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const entry = { child, dir };
  live.add(entry);

  const lines: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  for (const stream of [child.stdout, child.stderr]) {
    readline.createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      log.line(line);
      for (const w of lineWaiters) w(line);
    });
  }

  const exited = new Promise<ExitStatus>((resolve) => {
    // 'close' waits for the output pipes, so logs() is complete once this resolves.
    child.once('close', (code, signal) => {
      live.delete(entry);
      // What the test may have rewritten since, and a logfile the pooler wrote itself.
      noteConfigSecrets(iniPath, dir, source);
      copyLogfile(iniPath, dir, log);
      log.close();
      if (!keepTempDirs()) fs.rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
    });
  });
  let status: ExitStatus | null = null;
  void exited.then((s) => { status = s; });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  const failure = (why: string) =>
    new Error(`pooler ${why}\n--- ini (${iniPath}) ---\n${text}\n--- output ---\n${lines.join('\n')}`);

  const deadline = Date.now() + (opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
  for (;;) {
    const early = await Promise.race([
      exited.then((s) => `exited before accepting connections (code ${s.code}, signal ${s.signal})`),
      spawnError.then((e) => `could not be spawned: ${e.message}`),
      canConnect(host, port, path.join(iniValue(text, 'unix_socket_dir') ?? '/tmp', `.s.PGSQL.${port}`)).then((ok) => (ok ? 'ready' : null)),
    ]);
    if (early === 'ready') break;
    if (early !== null) {
      await Promise.race([exited, spawnError]);
      throw failure(early);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      throw failure(`did not accept connections on ${host}:${port} within ${opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }

  async function stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<ExitStatus> {
    if (status !== null) return status;
    child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<null>((r) => { timer = setTimeout(() => r(null), timeoutMs); });
    const s = await Promise.race([exited, timedOut]);
    clearTimeout(timer);
    if (s !== null) return s;
    child.kill('SIGKILL');
    return exited;
  }

  return {
    pid: child.pid ?? -1,
    host,
    port,
    dir,
    iniPath,
    authFile,
    exited,
    url(user, password, db) {
      const auth = password === '' ? encodeURIComponent(user) : `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
      const h = host.includes(':') ? `[${host}]` : host;
      return `postgresql://${auth}@${h}:${port}/${encodeURIComponent(db)}`;
    },
    logs: () => [...lines],
    waitForLog(pattern, timeoutMs = 10_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const onLine = (line: string) => {
          if (!pattern.test(line)) return;
          cleanup();
          resolve(line);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(failure(`printed no line matching ${pattern} within ${timeoutMs} ms`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          lineWaiters.delete(onLine);
        };
        lineWaiters.add(onLine);
      });
    },
    async writeIni(next) {
      await fsp.writeFile(iniPath, render(next));
      noteConfigSecrets(iniPath, dir, source);
    },
    reload() {
      noteConfigSecrets(iniPath, dir, source);
      child.kill('SIGHUP');
    },
    stop,
    kill: () => stop('SIGKILL'),
  };
}
