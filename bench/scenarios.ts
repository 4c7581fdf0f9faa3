// The scenario list. Adding one = appending an entry: a name, what it shows, the targets it runs
// on, how to run it against one target, and the goals pgpool-ts is judged by.

import fs from 'node:fs';
import path from 'node:path';
import type { Job, LoadResult } from './loadclient.js';
import { runPgbench, type Metrics } from './pgbench.js';
import { runCmd } from './procs.js';
import { PLAIN, TARGET_ORDER, TLS, WORKERS_TARGET, type Flavor, type Target, type TargetName } from './targets.js';

export interface RunContext {
  durationS: number;
  pgbench: string;
  psql: string;
  /** libpq environment for a target (bench user, password, database; sslmode from its flavor). */
  env(target: Target): NodeJS.ProcessEnv;
  /** Run bench/loadclient.js against a target; rssPid in an idle job is filled in by the caller. */
  load(target: Target, job: Job): Promise<LoadResult>;
  /** The bench's temp dir (data files). */
  dir: string;
  copyMb: number;
  abort: AbortSignal;
}

/**
 * What pgpool-ts must achieve in a scenario, computed per round and then as the median:
 * - ratio: pgpool-ts's TPS / `over`'s TPS ≥ `min`;
 * - cpu: pgpool-ts's CPU per transaction / `over`'s ≤ `max` (the process in front of PostgreSQL);
 * - heap: pgpool-ts allocates fewer than `max` bytes of V8 heap per transaction beyond what `over`
 *   allocates (Node's own callbacks allocate the same in both);
 * - added-latency: pgpool-ts's average latency minus `baseline`'s is at most `factor` × `rival`'s
 *   minus `baseline`'s (the time a hop adds to each query, against the rival's hop).
 */
export type Goal =
  | { kind: 'ratio'; over: TargetName; min: number }
  | { kind: 'ratio-max'; over: TargetName; max: number }
  | { kind: 'cpu'; over: TargetName; max: number }
  | { kind: 'heap'; over: TargetName; max: number }
  | { kind: 'added-latency'; baseline: TargetName; rival: TargetName; factor: number };

export interface Scenario {
  name: string;
  description: string;
  /** What the value column counts (chart axis label). */
  unit: string;
  /** For RSS and time-to-login: a smaller value is better, and ratio goals are upper bounds. */
  lowerIsBetter?: boolean;
  flavor: Flavor;
  targets: readonly TargetName[];
  goals: readonly Goal[];
  /** Once, before the scenario's first run (e.g. make a data file). */
  prepare?(ctx: RunContext): Promise<void>;
  /** Restart the target before each run: what is measured is a fresh process's growth (RSS). */
  fresh?: boolean;
  run(target: Target, ctx: RunContext): Promise<Metrics>;
}

/** Every target but pgpool-ts with workers, which runs only where a scenario names it. */
const TARGETS: readonly TargetName[] = TARGET_ORDER.filter((t) => t !== WORKERS_TARGET);
/** Those and pgpool-ts with 2 workers (issue 14's workers table). */
const WITH_WORKERS: readonly TargetName[] = TARGET_ORDER;

/** A scenario that is one pgbench invocation with fixed arguments. */
function pgbenchScenario(
  s: Omit<Scenario, 'run' | 'targets' | 'flavor'> & { args: string[]; clients: number; connectAllowanceS?: number; flavor?: Flavor; targets?: readonly TargetName[] },
): Scenario {
  const { args, clients, connectAllowanceS, flavor = PLAIN, targets = TARGETS, ...rest } = s;
  return {
    ...rest,
    flavor,
    targets,
    async run(target, ctx) {
      const r = await runPgbench(args, {
        pgbench: ctx.pgbench,
        env: ctx.env(target),
        durationS: ctx.durationS,
        connectAllowanceS,
        clients,
        abort: ctx.abort,
      });
      return { tps: r.tps, latencyMs: r.latencyMs, transactions: r.transactions, failed: r.failed, connTimeMs: r.connTimeMs, error: r.error, output: r.output };
    },
  };
}

const BEAT_PGBOUNCER: Goal = { kind: 'ratio', over: 'pgbouncer', min: 1.0 };
const POOLERS: readonly TargetName[] = ['pgpool-ts', 'pgbouncer'];
const POOLERS_WITH_WORKERS: readonly TargetName[] = ['pgpool-ts', WORKERS_TARGET, 'pgbouncer'];
/** Issue 13's targets for the select scenarios: within 1.2× of Node's floor in CPU per
 * transaction, 0.9× (plain) / 0.8× (TLS) of PgBouncer's throughput, and no allocation per
 * message on the hot path (under 50 bytes of heap per transaction beyond the floor's). */
const NEAR_FLOOR: Goal = { kind: 'cpu', over: 'floor', max: 1.2 };
const selectGoals = (tls: boolean): Goal[] => [{ kind: 'ratio', over: 'pgbouncer', min: tls ? 0.8 : 0.9 }, NEAR_FLOOR, { kind: 'heap', over: 'floor', max: 50 }];

/** A pgbench scenario in its plain and its TLS flavor (TLS runs have no naive proxy: it would
 * only pass PostgreSQL's own TLS through). `tlsGoals` replaces the goals in the TLS flavor. */
function plainAndTls(s: Parameters<typeof pgbenchScenario>[0] & { tlsGoals?: readonly Goal[] }): Scenario[] {
  const { tlsGoals, ...plain } = s;
  return [
    pgbenchScenario(plain),
    pgbenchScenario({ ...plain, name: `${s.name}-tls`, description: `${s.description}; TLS on both sides`, flavor: TLS, goals: tlsGoals ?? plain.goals }),
  ];
}

const noMetrics = (error: string): Metrics => ({ tps: null, latencyMs: null, transactions: null, failed: null, connTimeMs: null, error, output: null });

/** A bench/loadclient.js job as a scenario; `value` picks the headline number from its result. */
function loadScenario(
  s: Omit<Scenario, 'run' | 'flavor'> & { flavor: Flavor; job: (ctx: RunContext) => Job; value: (r: LoadResult) => number | null },
): Scenario {
  const { job, value, ...rest } = s;
  return {
    ...rest,
    async run(target, ctx) {
      let r: LoadResult;
      try {
        r = await ctx.load(target, job(ctx));
      } catch (err) {
        return noMetrics((err as Error).message);
      }
      const kinds = Object.entries(r.failures).map(([k, n]) => `${k}: ${n}`).join(', ');
      return {
        tps: value(r),
        latencyMs: r.p50Ms,
        transactions: r.ok,
        failed: r.failed,
        connTimeMs: r.p99Ms,
        error: r.ok === 0 ? `no connection succeeded (${kinds})` : null,
        output: null,
        detail: `${r.ok} ok, ${r.failed} failed${kinds === '' ? '' : ` (${kinds})`}, p50 ${r.p50Ms?.toFixed(1)} ms, p99 ${r.p99Ms?.toFixed(1)} ms, max ${r.maxMs?.toFixed(1)} ms` +
          `, ${r.synRetried} SYN retried, client CPU ${r.clientCpuMs.toFixed(0)} ms` +
          (r.rssAfterKiB === null ? '' : `, RSS ${r.rssBeforeKiB} → ${r.rssAfterKiB} KiB`),
      };
    },
  };
}

function stormScenario(backlog: number, goal: Goal, targets = POOLERS): Scenario {
  return loadScenario({
    name: `storm-backlog${backlog}-tls`,
    description: `2000 TLS + SCRAM logins at concurrency 500, listen_backlog = ${backlog}; value = p99 ms from connect() to the first ReadyForQuery (10 s limit per connection); latency column = p50`,
    unit: 'ms p99 to ReadyForQuery',
    lowerIsBetter: true,
    flavor: { tls: true, backlog },
    targets,
    goals: [goal],
    job: () => ({ mode: 'storm', total: 2000, concurrency: 500, timeoutMs: 10_000 }),
    value: (r) => r.p99Ms,
  });
}

function idleScenario(clients: number): Scenario {
  return loadScenario({
    name: `idle-${clients}-tls`,
    description: `${clients} TLS clients logged in and idle: the RSS growth per client (KiB) of a pooler restarted before the run`,
    unit: 'KiB RSS per idle client',
    lowerIsBetter: true,
    // A pooler keeps (and reuses) the memory of clients that left: only a fresh one shows the cost.
    fresh: true,
    flavor: TLS,
    targets: POOLERS,
    goals: [{ kind: 'ratio-max', over: 'pgbouncer', max: 1.5 }],
    job: () => ({ mode: 'idle', total: clients, concurrency: 100, settleMs: 2_000, rssPid: null }),
    value: (r) => (r.rssAfterKiB === null || r.rssBeforeKiB === null ? null : (r.rssAfterKiB - r.rssBeforeKiB) / r.ok),
  });
}

const COPY_TABLE_OUT = 'copy_out';
const COPY_TABLE_IN = 'copy_in';
const copyFile = (ctx: RunContext) => path.join(ctx.dir, `copy-${ctx.copyMb}mb.tsv`);

async function psqlAt(ctx: RunContext, target: Target, commands: string[], timeoutMs: number): Promise<{ error: string | null; seconds: number }> {
  const started = performance.now();
  const r = await runCmd(ctx.psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', ...commands.flatMap((c) => ['-c', c])], {
    env: ctx.env(target),
    timeoutMs,
    abort: ctx.abort,
  });
  const seconds = (performance.now() - started) / 1000;
  return { error: r.code === 0 ? null : `psql exited with ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.slice(-300)}`, seconds };
}

/** The COPY data: `copyMb` MB of (int, text) rows, each distinct so nothing compresses away. */
async function makeCopyData(ctx: RunContext, direct: () => Target): Promise<void> {
  const file = copyFile(ctx);
  if (!fs.existsSync(file)) {
    const fd = fs.openSync(file, 'w');
    const filler = 'x'.repeat(80);
    let id = 0;
    for (let written = 0; written < ctx.copyMb * 1e6; ) {
      const rows: string[] = [];
      for (let i = 0; i < 10_000; i++, id++) rows.push(`${id}\t${id.toString(36)} ${filler}\n`);
      const chunk = rows.join('');
      fs.writeSync(fd, chunk);
      written += chunk.length;
    }
    fs.closeSync(fd);
  }
  const t = direct();
  const r = await psqlAt(ctx, t, [
    `DROP TABLE IF EXISTS ${COPY_TABLE_OUT}, ${COPY_TABLE_IN}`,
    `CREATE UNLOGGED TABLE ${COPY_TABLE_OUT} (id bigint, payload text)`,
    `CREATE UNLOGGED TABLE ${COPY_TABLE_IN} (id bigint, payload text)`,
    `\\copy ${COPY_TABLE_OUT} from '${file}'`,
  ], 1_800_000);
  if (r.error !== null) throw new Error(`loading the COPY table: ${r.error}`);
}

function copyScenario(direction: 'in' | 'out', direct: () => Target): Scenario {
  return {
    name: `copy-${direction}`,
    description: direction === 'in'
      ? 'psql \\copy FROM a file of COPY_MB MB (default 1024) into an unlogged table, through the target: MB/s'
      : 'psql \\copy TO /dev/null of a table of COPY_MB MB (default 1024), through the target: MB/s',
    unit: 'MB/s',
    flavor: PLAIN,
    targets: TARGETS,
    goals: [{ kind: 'ratio', over: 'direct', min: 0.9 }],
    prepare: direction === 'in' ? (ctx) => makeCopyData(ctx, direct) : undefined,
    async run(target, ctx) {
      const file = copyFile(ctx);
      const bytes = fs.statSync(file).size;
      const commands = direction === 'in'
        ? [`TRUNCATE ${COPY_TABLE_IN}`, `\\copy ${COPY_TABLE_IN} from '${file}'`]
        : [`\\copy ${COPY_TABLE_OUT} to '/dev/null'`];
      const r = await psqlAt(ctx, target, commands, 1_800_000);
      if (r.error !== null) return noMetrics(r.error);
      return { tps: bytes / 1e6 / r.seconds, latencyMs: null, transactions: null, failed: 0, connTimeMs: null, error: null, output: null, detail: `${(bytes / 1e6).toFixed(0)} MB in ${r.seconds.toFixed(2)} s` };
    },
  };
}

/** The scenario list; `direct` gives COPY's setup the direct target. */
export function scenarios(direct: () => Target): Scenario[] {
  return [
    ...plainAndTls({
      name: 'select-simple-32',
      description: 'pgbench -S (one primary-key SELECT per transaction), simple protocol, 32 clients, 2 threads',
      unit: 'TPS',
      args: ['-S', '-n', '-M', 'simple', '-c', '32', '-j', '2'],
      clients: 32,
      targets: WITH_WORKERS,
      goals: selectGoals(false),
      tlsGoals: selectGoals(true),
    }),
    ...plainAndTls({
      name: 'select-extended-32',
      description: 'pgbench -S, extended protocol (Parse/Bind/Execute/Sync, unnamed statements), 32 clients',
      unit: 'TPS',
      args: ['-S', '-n', '-M', 'extended', '-c', '32', '-j', '2'],
      clients: 32,
      goals: selectGoals(false),
      tlsGoals: selectGoals(true),
    }),
    ...plainAndTls({
      name: 'select-simple-1',
      description: 'pgbench -S, 1 client: pure per-query latency; added latency = target − direct',
      unit: 'TPS',
      args: ['-S', '-n', '-M', 'simple', '-c', '1', '-j', '1'],
      clients: 1,
      goals: [{ kind: 'added-latency', baseline: 'direct', rival: 'pgbouncer', factor: 1.3 }],
    }),
    pgbenchScenario({
      name: 'select-prepared-32',
      description: 'pgbench -S -M prepared (named statements, Parse once per connection), 32 clients; PgBouncer 1.18 has no prepared-statement support in transaction mode, so its runs fail',
      unit: 'TPS',
      args: ['-S', '-n', '-M', 'prepared', '-c', '32', '-j', '2'],
      clients: 32,
      goals: [BEAT_PGBOUNCER],
    }),
    pgbenchScenario({
      name: 'tpcb-32',
      description: 'pgbench default TPC-B-like script (5 statements in BEGIN…END), 32 clients',
      unit: 'TPS',
      args: ['-n', '-M', 'simple', '-c', '32', '-j', '2'],
      clients: 32,
      goals: [BEAT_PGBOUNCER],
    }),
    pgbenchScenario({
      name: 'clients-1000',
      description: 'pgbench -S, 1000 clients: through a pool of 20 server connections vs 1000 direct backends; -T gets 30 s more for the 1000 SCRAM logins',
      unit: 'TPS',
      args: ['-S', '-n', '-M', 'simple', '-c', '1000', '-j', '2'],
      clients: 1000,
      targets: WITH_WORKERS,
      // Connecting 1000 SCRAM clients takes 10–20 s on 2 cores (measured), all inside pgbench's -T.
      connectAllowanceS: 30,
      goals: [BEAT_PGBOUNCER, { kind: 'ratio', over: 'direct', min: 1.0 }],
    }),
    ...plainAndTls({
      name: 'churn-32',
      description: 'pgbench -C -S: a new connection (SCRAM login) for every transaction, 32 clients',
      unit: 'connections/s',
      args: ['-C', '-S', '-n', '-M', 'simple', '-c', '32', '-j', '2'],
      clients: 32,
      goals: [BEAT_PGBOUNCER],
    }),
    loadScenario({
      name: 'churn-node-16-tls',
      description: 'bench/loadclient.js: TLS connect, SCRAM, SELECT 1, Terminate, at concurrency 16 (client-side SCRAM keys cached): connections/s',
      unit: 'connections/s',
      flavor: TLS,
      targets: ['pgpool-ts', 'pgbouncer', 'direct'],
      goals: [BEAT_PGBOUNCER],
      job: (ctx) => ({ mode: 'churn', durationS: ctx.durationS, concurrency: 16 }),
      value: (r) => r.ok / r.elapsedS,
    }),
    stormScenario(16, { kind: 'ratio-max', over: 'pgbouncer', max: 0.5 }, POOLERS_WITH_WORKERS),
    stormScenario(1024, { kind: 'ratio-max', over: 'pgbouncer', max: 1.0 }),
    idleScenario(1000),
    idleScenario(5000),
    idleScenario(10000),
    copyScenario('in', direct),
    copyScenario('out', direct),
  ];
}

/** Scenario names, for --help and argument checks (no targets needed to list them). */
export const SCENARIO_NAMES: readonly string[] = scenarios(() => {
  throw new Error('no target');
}).map((s) => s.name);
