// The bench's own connection load, for what pgbench cannot do: churn from a second kind of client,
// a connection storm with time-to-ReadyForQuery per connection, and thousands of idle logged-in
// clients. Runs as its own process (its CPU is not the orchestrator's; its descriptor limit is
// raised by the shell that starts it) and prints one JSON line.
//
//   node dist/bench/loadclient.js '{"mode":"churn",...}'   (see Job below)
//
// It speaks the protocol itself: a driver would spend 2–5 ms of PBKDF2 per SCRAM login on the
// client and measure its own CPU. Here the salted password is derived once per salt, so a login
// costs the client two HMACs, and the numbers are the server side's.

import { createHmac, pbkdf2Sync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { cstr, int32, msg, sslRequest, startupPacket } from '../test/support/bytes.js';
import { ScramClientSession, parseScramSecret, type ScramCredentials, type ScramError } from '../src/protocol/scram.js';

export type Job =
  | { mode: 'churn'; durationS: number; concurrency: number }
  | { mode: 'storm'; total: number; concurrency: number; timeoutMs: number }
  | { mode: 'idle'; total: number; concurrency: number; settleMs: number; rssPid: number | null };

export interface Target {
  host: string;
  port: number;
  tls: boolean;
  user: string;
  database: string;
  keys: ScramCredentials;
}

export interface LoadResult {
  /** Connections completed (churn: login + SELECT 1 + Terminate; storm/idle: logged in). */
  ok: number;
  failed: number;
  /** Failures by kind: a SQLSTATE, an errno (ECONNRESET…), "timeout", "tls: …". */
  failures: Record<string, number>;
  elapsedS: number;
  /** Milliseconds from connect() to the first ReadyForQuery, per successful connection. */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** idle: the watched process's RSS before the first and after the last connection, KiB. */
  rssBeforeKiB: number | null;
  rssAfterKiB: number | null;
  /** Connections whose TCP connect took a second or more: the pooler's queue (listen_backlog) was
   * full, their SYN was dropped and retried by the kernel a second later. */
  synRetried: number;
  /** This process's CPU (user + system), ms: on a small machine a storm is bound by it. */
  clientCpuMs: number;
}

/** Linux retries a dropped SYN after 1 s: a connect that took this long met a full queue. */
const SYN_RETRY_MS = 1000;
let synRetried = 0;


class LoginError extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}

/** The SCRAM keys for `password` under the salt and iteration count of `secret` (the verifier
 * PostgreSQL stores, which the poolers' userlist holds too): derived once, so a login costs the
 * client two HMACs instead of 4096 PBKDF2 rounds. */
export function scramKeys(password: string, secret: string): { clientKey: Buffer; serverKey: Buffer } {
  const parsed = parseScramSecret(secret);
  if (parsed === null) throw new Error('not a SCRAM-SHA-256 secret');
  const salted = pbkdf2Sync(password, parsed.salt, parsed.iterations, 32, 'sha256');
  return {
    clientKey: createHmac('sha256', salted).update('Client Key').digest(),
    serverKey: createHmac('sha256', salted).update('Server Key').digest(),
  };
}

/** One logged-in connection; `close()` sends Terminate. */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private failure: LoginError | null = null;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => this.fail(new LoginError(e.code ?? 'socket error', e.message)));
    sock.on('close', () => this.fail(new LoginError('closed by peer', 'connection closed')));
  }

  private fail(e: LoginError): void {
    this.failure ??= e;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** The next backend message. */
  private async next(): Promise<{ type: string; body: Buffer }> {
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length >= len + 1) {
          const type = String.fromCharCode(this.buf[0]!);
          const body = this.buf.subarray(5, len + 1);
          this.buf = this.buf.subarray(len + 1);
          return { type, body };
        }
      }
      if (this.failure !== null) throw this.failure;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  /** Read until ReadyForQuery; an ErrorResponse becomes a LoginError named by its SQLSTATE. */
  private async untilReady(onAuth: (code: number, body: Buffer) => void): Promise<void> {
    for (;;) {
      const m = await this.next();
      if (m.type === 'Z') return;
      if (m.type === 'R') onAuth(m.body.readInt32BE(0), m.body.subarray(4));
      else if (m.type === 'E') {
        const fields = new Map(m.body.toString('utf8').split('\0').filter((f) => f !== '').map((f) => [f[0], f.slice(1)]));
        throw new LoginError(fields.get('C') ?? 'ErrorResponse', fields.get('M') ?? '');
      }
    }
  }

  static async open(t: Target): Promise<Conn> {
    const started = performance.now();
    const raw = net.connect({ host: t.host, port: t.port, noDelay: true });
    raw.once('connect', () => {
      if (performance.now() - started >= SYN_RETRY_MS) synRetried++;
    });
    let conn = new Conn(raw);
    if (t.tls) {
      raw.write(sslRequest());
      const answer = await conn.byte();
      if (answer !== 'S') throw new LoginError('no TLS', `server answered ${answer} to SSLRequest`);
      raw.removeAllListeners('data');
      raw.removeAllListeners('close');
      const secure = tls.connect({ socket: raw, rejectUnauthorized: false, servername: undefined });
      conn = new Conn(secure);
      await new Promise<void>((resolve, reject) => {
        secure.once('secureConnect', resolve);
        secure.once('error', (e) => reject(new LoginError(`tls: ${(e as NodeJS.ErrnoException).code ?? e.message}`, e.message)));
      });
    }
    conn.sock.write(startupPacket({ user: t.user, database: t.database }));
    const scram = new ScramClientSession(t.keys);
    await conn.untilReady((code, body) => {
      let reply: Buffer | ScramError | true = true;
      if (code === 10) {
        const first = scram.clientFirst();
        reply = msg('p', cstr('SCRAM-SHA-256'), int32(first.length), first);
      } else if (code === 11) {
        const final = scram.handleServerFirst(body);
        reply = Buffer.isBuffer(final) ? msg('p', final) : final;
      } else if (code === 12) reply = scram.verifyServerFinal(body);
      else if (code !== 0) reply = { error: `authentication request ${code} (only SCRAM is set up)` };
      if (Buffer.isBuffer(reply)) conn.sock.write(reply);
      else if (reply !== true) throw new LoginError('auth', reply.error);
    });
    return conn;
  }

  /** One byte (the SSLRequest answer). */
  private async byte(): Promise<string> {
    while (this.buf.length === 0) {
      if (this.failure !== null) throw this.failure;
      await new Promise<void>((r) => (this.waiter = r));
    }
    const b = String.fromCharCode(this.buf[0]!);
    this.buf = this.buf.subarray(1);
    return b;
  }

  async query(sql: string): Promise<void> {
    this.sock.write(msg('Q', cstr(sql)));
    await this.untilReady(() => undefined);
  }

  close(): void {
    this.sock.end(msg('X'));
  }
}

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function kindOf(err: unknown): string {
  if (err instanceof LoginError) return err.kind;
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/** Open a connection, bounded by `timeoutMs`; on timeout the socket is destroyed. */
async function openWithin(t: Target, timeoutMs: number): Promise<{ conn: Conn; ms: number }> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const attempt = Conn.open(t);
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LoginError('timeout', `no ReadyForQuery within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const conn = await Promise.race([attempt, timeout]);
    return { conn, ms: performance.now() - started };
  } catch (err) {
    // A late success after the timeout must not leak a connection.
    void attempt.then((c) => c.sock.destroy(), () => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

function rssKiB(pid: number | null): number | null {
  if (pid === null) return null;
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? null : Number(m[1]);
}

/** Run `count` tasks (or until `until()` is false) with at most `concurrency` in flight. */
async function workers(concurrency: number, more: () => boolean, task: () => Promise<void>): Promise<void> {
  const one = async () => {
    while (more()) await task();
  };
  await Promise.all(Array.from({ length: concurrency }, one));
}

export async function runJob(t: Target, job: Job): Promise<LoadResult> {
  const failures: Record<string, number> = {};
  const times: number[] = [];
  let ok = 0;
  const fail = (err: unknown) => {
    const k = kindOf(err);
    failures[k] = (failures[k] ?? 0) + 1;
  };
  const started = performance.now();
  let rssBeforeKiB: number | null = null;
  let rssAfterKiB: number | null = null;

  if (job.mode === 'churn') {
    const deadline = started + job.durationS * 1000;
    await workers(job.concurrency, () => performance.now() < deadline, async () => {
      try {
        const { conn, ms } = await openWithin(t, 10_000);
        times.push(ms);
        await conn.query('SELECT 1');
        conn.close();
        ok++;
      } catch (err) {
        fail(err);
      }
    });
  } else {
    let started_ = 0;
    const open: Conn[] = [];
    if (job.mode === 'idle') rssBeforeKiB = rssKiB(job.rssPid);
    const timeoutMs = job.mode === 'storm' ? job.timeoutMs : 30_000;
    await workers(job.concurrency, () => started_ < job.total, async () => {
      started_++;
      try {
        const { conn, ms } = await openWithin(t, timeoutMs);
        times.push(ms);
        ok++;
        if (job.mode === 'idle') open.push(conn);
        else conn.close();
      } catch (err) {
        fail(err);
      }
    });
    if (job.mode === 'idle') {
      // Let the pooler finish what the logins started (buffers, GC) before reading its RSS.
      await new Promise((r) => setTimeout(r, job.settleMs));
      rssAfterKiB = rssKiB(job.rssPid);
      for (const c of open) c.close();
    }
  }
  const elapsedS = (performance.now() - started) / 1000;
  times.sort((a, b) => a - b);
  return {
    ok,
    failed: Object.values(failures).reduce((a, b) => a + b, 0),
    failures,
    elapsedS,
    p50Ms: percentile(times, 50),
    p99Ms: percentile(times, 99),
    maxMs: times.at(-1) ?? null,
    rssBeforeKiB,
    rssAfterKiB,
    synRetried,
    clientCpuMs: (({ user, system }) => (user + system) / 1000)(process.cpuUsage()),
  };
}

export interface LoadSpec {
  target: Omit<Target, 'keys'> & { password: string; secret: string };
  job: Job;
}

if (process.argv[1]?.endsWith('loadclient.js')) {
  const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
  const { password, secret, ...rest } = spec.target;
  runJob({ ...rest, keys: scramKeys(password, secret) }, spec.job).then(
    (r) => {
      process.stdout.write(JSON.stringify(r) + '\n');
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`loadclient: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
