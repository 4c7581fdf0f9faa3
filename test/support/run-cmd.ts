// Run an external program (psql, pgbench, openssl, initdb...) to completion with a hard deadline,
// capturing its output. Failures are returned, not thrown, so a test can assert on the exit code
// and message of a command that is meant to fail; only "could not start at all" rejects.

import { spawn } from 'node:child_process';

export interface RunOptions {
  /** Merged over the inherited environment; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** SIGKILL after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to stdin, which is then closed (at once when there is no input). */
  input?: string | Buffer;
  cwd?: string;
}

export interface RunResult {
  /** null when killed by a signal (including our timeout). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const DEFAULT_TIMEOUT_MS = 30_000;

export function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env,
      cwd: opts.cwd,
      stdio: 'pipe',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    // A child that exits without reading all of stdin gives EPIPE; its exit code tells the story.
    child.stdin.on('error', () => undefined);
    if (opts.input === undefined) child.stdin.end();
    else child.stdin.end(opts.input);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    // 'close', not 'exit': it fires after stdout/stderr are drained.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
  });
}

/** libpq variables from the developer's shell (PGHOST, PGSSLMODE, ...) would silently change what
 * a test connects to; psql and pgbench get only what the test passes. */
function libpqEnv(env: RunOptions['env']): Record<string, string | undefined> {
  const clean: Record<string, string | undefined> = {};
  for (const k of Object.keys(process.env)) {
    if (k.startsWith('PG')) clean[k] = undefined;
  }
  // Bounded even when the target accepts TCP but never answers.
  return { ...clean, PGCONNECT_TIMEOUT: '10', ...env };
}

/**
 * `psql -X -A -t -v ON_ERROR_STOP=1 -d <conn> -c <sql>`: no psqlrc, unaligned rows without headers,
 * exit code 1/3 on error. `conn` is a URL or a keyword/value string.
 */
export function psql(conn: string, sql: string, opts: RunOptions = {}): Promise<RunResult> {
  return runCommand('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', conn, '-c', sql],
    { ...opts, env: libpqEnv(opts.env) });
}

/** `psql -X -A -t -q -v ON_ERROR_STOP=1 -d <conn> -f <file>`: a script file, as psql() runs a command. */
export function psqlFile(conn: string, file: string, opts: RunOptions = {}): Promise<RunResult> {
  return runCommand('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conn, '-f', file],
    { ...opts, env: libpqEnv(opts.env) });
}

/** pgbench with the given arguments (connection via -h/-p/-U/dbname or `env`), e.g.
 * `pgbench(['-n', '-c', '4', '-t', '50', '-S', url])`. */
export function pgbench(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand('pgbench', args, { timeoutMs: 120_000, ...opts, env: libpqEnv(opts.env) });
}

/** A libpq keyword/value connection string; undefined values are left out. */
export function conninfo(kv: Record<string, string | undefined>): string {
  return Object.entries(kv)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}='${String(v).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}
