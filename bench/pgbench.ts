// One pgbench run against one target, bounded in time, and what its summary says.

import { runCmd } from './procs.js';

export interface Metrics {
  /** Transactions per second as pgbench reports it (with -C: connections per second). */
  tps: number | null;
  latencyMs: number | null;
  transactions: number | null;
  failed: number | null;
  /** Initial connection time (without -C) or average connection time (with -C), ms. */
  connTimeMs: number | null;
  /** Why the run does not count: pgbench failed, was aborted, or hung. */
  error: string | null;
  /** pgbench's own output when the run does not count, to see why. */
  output: string | null;
  /** A one-line account of a run that pgbench's summary does not give (load client, COPY). */
  detail?: string;
}

export interface PgbenchResult extends Metrics {
  argv: string[];
  exitCode: number | null;
}

function num(re: RegExp, text: string): number | null {
  const m = re.exec(text);
  return m?.[1] === undefined ? null : Number(m[1]);
}

/** pgbench (PostgreSQL 14+) summary lines; tps is "(without initial connection time)", or with -C
 * "(including reconnection times)". */
export function parsePgbench(stdout: string): Omit<Metrics, 'error' | 'output'> {
  return {
    tps: num(/^tps = ([\d.]+)/m, stdout),
    latencyMs: num(/^latency average = ([\d.]+) ms/m, stdout),
    transactions: num(/^number of transactions actually processed: (\d+)/m, stdout),
    failed: num(/^number of failed transactions: (\d+)/m, stdout) ?? 0,
    connTimeMs: num(/^(?:initial|average) connection time = ([\d.]+) ms/m, stdout),
  };
}

export interface PgbenchOptions {
  pgbench: string;
  env: NodeJS.ProcessEnv;
  durationS: number;
  /** Added to -T for connecting: pgbench's clock starts before its clients connect, while its tps
   * leaves the connection phase out, so this keeps the measured window at about durationS. */
  connectAllowanceS?: number;
  clients: number;
  abort: AbortSignal;
}

/**
 * Run pgbench with `args` (a `-T` is added) through bash, which first raises the open-files limit:
 * a thousand clients need a thousand descriptors. 65536 when allowed, else the hard limit.
 */
export async function runPgbench(args: readonly string[], o: PgbenchOptions): Promise<PgbenchResult> {
  const totalS = o.durationS + (o.connectAllowanceS ?? 0);
  const argv = [...args, '-T', String(totalS)];
  const script = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"';
  // Past -T, pgbench only waits for in-flight transactions; connecting 1000 clients through SCRAM
  // takes a few seconds more. Anything beyond this bound is a hang.
  const graceS = 30 + Math.ceil(o.clients / 10);
  const r = await runCmd('bash', ['-c', script, o.pgbench, ...argv], {
    env: o.env,
    timeoutMs: (totalS + graceS) * 1000,
    abort: o.abort,
  });
  const parsed = parsePgbench(r.stdout);
  const errLines = r.stderr.split('\n').filter((l) => /error|abort|fatal|could not/i.test(l));
  let error: string | null = null;
  if (o.abort.aborted) error = 'interrupted';
  else if (r.timedOut) error = `hung: pgbench was still running ${graceS} s after its ${totalS} s run; killed`;
  else if (r.code !== 0) error = `pgbench exited with code ${r.code}: ${errLines.slice(0, 3).join(' | ') || r.stderr.slice(-300)}`;
  else if (parsed.tps === null) error = `pgbench printed no tps line (${parsed.transactions ?? 0} transactions: still connecting when -T ${totalS} ran out?)`;
  return {
    ...parsed,
    error,
    output: error === null ? null : `${r.stdout}\n--- stderr (last 30 lines) ---\n${r.stderr.split('\n').slice(-30).join('\n')}`,
    argv,
    exitCode: r.code,
  };
}
