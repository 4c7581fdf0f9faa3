// Every process the bench starts goes through here, so that one place can stop them all: in
// order on a normal finish or Ctrl-C, and with SIGKILL from the 'exit' handler as a last resort
// (exit handlers cannot wait). Output goes to a log file by fd, never through a pipe we would have
// to drain: a pooler logging every connection must not slow down because the bench reads slowly.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { canConnect } from '../test/support/pooler.js';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** stdout and stderr both go here (appended). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run as this OS uid/gid: PostgreSQL and PgBouncer refuse to run as root. */
  uid?: number;
  gid?: number;
  /** Signal that the exit-time safety net sends (postmaster: SIGQUIT, an immediate shutdown). */
  lastResortSignal?: NodeJS.Signals;
}

/** Everything still running, with the signal the exit-time safety net sends it. */
const live = new Set<{ child: ChildProcess; lastResort: NodeJS.Signals }>();

export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  status: ExitStatus | null = null;

  constructor(
    readonly name: string,
    cmd: string,
    args: readonly string[],
    readonly opts: SpawnOptions,
  ) {
    const fd = fs.openSync(opts.logFile, 'a');
    try {
      this.child = spawn(cmd, args, {
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        uid: opts.uid,
        gid: opts.gid,
        stdio: ['ignore', fd, fd],
      });
    } finally {
      // The child holds its own copy of the descriptor.
      fs.closeSync(fd);
    }
    if (this.child.pid === undefined) throw new Error(`cannot start ${name} (${cmd})`);
    this.pid = this.child.pid;
    const entry = { child: this.child, lastResort: opts.lastResortSignal ?? 'SIGKILL' };
    live.add(entry);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(entry);
        this.status = { code, signal };
        resolve(this.status);
      });
    });
  }

  alive(): boolean {
    return this.status === null;
  }

  /** Send `signal`; SIGKILL if still running after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<ExitStatus> {
    if (this.status !== null) return this.status;
    this.child.kill(signal);
    const timedOut = await waitFor(this.exited, timeoutMs);
    if (timedOut) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** utime + stime of the whole process (all threads), in clock ticks; null once it has exited. */
  cpuTicks(): number | null {
    const f = statFields(this.pid);
    return f === null ? null : Number(f[11]) + Number(f[12]);
  }

  logTail(lines = 200): string {
    return tailOf(this.opts.logFile, lines);
  }
}

/** true when `p` did not settle within `ms`. */
async function waitFor(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<true>((r) => (timer = setTimeout(() => r(true), ms)));
  const timedOut = await Promise.race([p.then(() => false), t]);
  clearTimeout(timer);
  return timedOut;
}

/** /proc/PID/stat after the parenthesised command name (which may contain spaces): [0] is the
 * state (field 3), [1] ppid, [11] utime, [12] stime, [13] cutime, [14] cstime. null once gone. */
export function statFields(pid: number | 'self'): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}


/** Clock ticks per second for /proc/PID/stat (100 on practically every Linux). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export function tailOf(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '';
  }
}

/** Safety net: SIGKILL (or each process's own last-resort signal) to whatever is still running. */
export function killAllSync(): void {
  for (const p of live) p.child.kill(p.lastResort);
}

process.on('exit', killAllSync);

/** Wait until `proc` accepts TCP connections on host:port; throws with its log if it exits first. */
export async function waitForPort(proc: Proc, host: string, port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.alive()) {
      throw new Error(`${proc.name} exited (${JSON.stringify(proc.status)}) before accepting connections:\n${proc.logTail(40)}`);
    }
    if (await canConnect(host, port)) return;
    if (Date.now() > deadline) {
      throw new Error(`${proc.name} did not accept connections on ${host}:${port} within ${timeoutMs} ms:\n${proc.logTail(40)}`);
    }
    await sleep(50);
  }
}

// The test harness's probes serve the bench as they are.
export { canConnect, freePort } from '../test/support/pooler.js';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface CmdResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Run a short command to completion (initdb, psql, pgbench -i, pgbench runs), SIGKILLed after
 * `timeoutMs` or when `abort` fires. Tracked in `live` like the long-running ones. */
export function runCmd(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number; timeoutMs: number; abort?: AbortSignal },
): Promise<CmdResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, uid: opts.uid, gid: opts.gid, stdio: ['ignore', 'pipe', 'pipe'] });
    const entry = { child, lastResort: 'SIGKILL' as const };
    live.add(entry);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, opts.timeoutMs);
    opts.abort?.addEventListener('abort', kill, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      live.delete(entry);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(entry);
      opts.abort?.removeEventListener('abort', kill);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut });
    });
  });
}
