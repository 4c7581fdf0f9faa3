// From raw runs to the two tables: what each target did, and how pgpool-ts compares, round by
// round and as medians, with a verdict for every goal. Nothing here fails the bench.

import type { Metrics } from './pgbench.js';
import type { Goal, Scenario } from './scenarios.js';
import { TARGET_LABEL, type TargetName } from './targets.js';

export interface RunRecord {
  scenario: string;
  round: number;
  target: TargetName;
  startedAt: string;
  metrics: Metrics;
  /** CPU time (user + system) of the process in front of PostgreSQL during the run. */
  poolerCpuS: number | null;
  /** poolerCpuS per transaction (per connection for churn), µs. */
  poolerCpuUsPerTx: number | null;
  /** A multi-process pooler (workers): poolerCpuUsPerTx by process, the main process first. */
  poolerCpuUsPerTxByProcess?: number[];
  /** Of poolerCpuUsPerTx, the part in user space, µs (runs before 2026-12-08T03 lack it). The rest
   * is the kernel's: reading and writing loopback sockets, waking the peer, sleeping in epoll. */
  poolerUserUsPerTx?: number | null;
  /** Bytes the Node process allocated on its heap per transaction during the run (Node targets). */
  heapBytesPerTx: number | null;
  /** Share of the machine's CPU (0–1) that processes outside the benchmark used during the run. */
  otherLoad: number | null;
  /** CPU time of PostgreSQL (postmaster and backends) per transaction, µs (runs before 2026-12-08 lack it). */
  postgresCpuUsPerTx?: number | null;
  /** Share of the machine's CPU (0–1) left idle during the run (runs before 2026-12-08 lack it). */
  idleShare?: number | null;
  /** CPU time of the client (pgbench, the load client) per transaction, µs: the same work whatever
   * the target, so it gauges how fast the machine ran during this run (the VM's speed drifts by
   * up to a third over minutes, every process's CPU per transaction with it). */
  clientCpuUsPerTx?: number | null;
  /** How long the bench waited for the machine to be quiet before this run, s. */
  quietWaitS: number;
  /** Something that happened around the run, e.g. the pooler had died and was restarted. */
  note: string | null;
  /** The pooler's last log lines, kept when its run failed. */
  poolerLogTail: string | null;
}

export interface TargetSummary {
  target: TargetName;
  runs: number;
  okRuns: number;
  medianTps: number | null;
  minTps: number | null;
  maxTps: number | null;
  medianLatencyMs: number | null;
  medianConnMs: number | null;
  medianCpuUsPerTx: number | null;
  medianUserUsPerTx: number | null;
  medianHeapBytesPerTx: number | null;
  medianOtherLoad: number | null;
  medianPostgresCpuUsPerTx: number | null;
  medianIdleShare: number | null;
  medianClientCpuUsPerTx: number | null;
  failedTx: number;
}

export interface Comparison {
  label: string;
  perRound: string[];
  median: string;
  goal: string;
  verdict: 'PASS' | 'FALL SHORT' | null;
}

export interface ScenarioSummary {
  scenario: string;
  unit: string;
  lowerIsBetter: boolean;
  targets: TargetSummary[];
  comparisons: Comparison[];
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const ok = (r: RunRecord) => r.metrics.error === null && r.metrics.tps !== null;
const nums = (xs: readonly (number | null)[]) => xs.filter((x): x is number => x !== null);

function summarizeTarget(runs: RunRecord[], target: TargetName): TargetSummary {
  const good = runs.filter(ok);
  const tps = nums(good.map((r) => r.metrics.tps));
  return {
    target,
    runs: runs.length,
    okRuns: good.length,
    medianTps: median(tps),
    minTps: tps.length > 0 ? Math.min(...tps) : null,
    maxTps: tps.length > 0 ? Math.max(...tps) : null,
    medianLatencyMs: median(nums(good.map((r) => r.metrics.latencyMs))),
    medianConnMs: median(nums(good.map((r) => r.metrics.connTimeMs))),
    medianCpuUsPerTx: median(nums(good.map((r) => r.poolerCpuUsPerTx))),
    medianUserUsPerTx: median(nums(good.map((r) => r.poolerUserUsPerTx ?? null))),
    medianHeapBytesPerTx: median(nums(good.map((r) => r.heapBytesPerTx))),
    medianOtherLoad: median(nums(good.map((r) => r.otherLoad))),
    medianPostgresCpuUsPerTx: median(nums(good.map((r) => r.postgresCpuUsPerTx ?? null))),
    medianIdleShare: median(nums(good.map((r) => r.idleShare ?? null))),
    medianClientCpuUsPerTx: median(nums(good.map((r) => r.clientCpuUsPerTx ?? null))),
    failedTx: runs.reduce((n, r) => n + (r.metrics.failed ?? 0), 0),
  };
}

const ratioStr = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(2)}×`);
const msStr = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(3)} ms`);

/** Why pgpool-ts cannot pass whatever the numbers say: a run that errored or lost transactions. */
function pgpoolTrouble(runs: RunRecord[]): string | null {
  const own = runs.filter((r) => r.target === 'pgpool-ts');
  const bad = own.filter((r) => !ok(r)).length;
  const failed = own.reduce((n, r) => n + (r.metrics.failed ?? 0), 0);
  if (bad > 0) return `${bad} of ${own.length} pgpool-ts runs failed`;
  if (failed > 0) return `${failed} failed transactions`;
  return null;
}

/** pgpool-ts's value over `over`'s, round by round: the scenario's headline number, or with
 * `cpu` the pooler CPU per transaction. */
function compare(runs: RunRecord[], rounds: number[], goal: Goal | null, over: TargetName, unit: string, cpu = false): Comparison {
  const at = (t: TargetName, round: number) => runs.find((r) => r.target === t && r.round === round && ok(r)) ?? null;
  const value = (r: RunRecord | null) => (r === null ? null : cpu ? r.poolerCpuUsPerTx : r.metrics.tps);
  const perRound = rounds.map((round) => {
    const a = value(at('pgpool-ts', round));
    const b = value(at(over, round));
    return a === null || b === null || b === 0 ? null : a / b;
  });
  const med = median(nums(perRound));
  const trouble = pgpoolTrouble(runs);
  const bound = goal?.kind === 'ratio' ? { text: `≥ ${goal.min.toFixed(1)}×`, met: (x: number) => x >= goal.min }
    : goal?.kind === 'ratio-max' || goal?.kind === 'cpu' ? { text: `≤ ${goal.max.toFixed(1)}×`, met: (x: number) => x <= goal.max }
    : null;
  return {
    label: `pgpool-ts / ${TARGET_LABEL[over]} (${cpu ? 'pooler CPU µs/tx' : unit})`,
    perRound: perRound.map(ratioStr),
    median: ratioStr(med),
    goal: bound === null ? '—' : bound.text + (trouble === null ? '' : ` (${trouble})`),
    verdict: bound === null ? null : med !== null && bound.met(med) && trouble === null ? 'PASS' : 'FALL SHORT',
  };
}

function compareAddedLatency(runs: RunRecord[], rounds: number[], goal: Extract<Goal, { kind: 'added-latency' }>): Comparison {
  const lat = (t: TargetName, round: number) => {
    const r = runs.find((x) => x.target === t && x.round === round && ok(x));
    return r?.metrics.latencyMs ?? null;
  };
  const added = (t: TargetName) =>
    rounds.map((round) => {
      const a = lat(t, round);
      const base = lat(goal.baseline, round);
      return a === null || base === null ? null : a - base;
    });
  const ours = added('pgpool-ts');
  const theirs = added(goal.rival);
  // Judged, like every other goal, on the median of the per-round ratios: a ratio of the two
  // medians would pair rounds that ran minutes apart on a machine whose speed drifts.
  const ratios = ours.map((x, i) => {
    const y = theirs[i] ?? null;
    return x === null || y === null || y <= 0 ? null : x / y;
  });
  const mRatio = median(nums(ratios));
  const trouble = pgpoolTrouble(runs);
  const times = goal.factor === 1 ? '' : `${goal.factor.toFixed(1)}× `;
  return {
    label: `added latency per query vs ${TARGET_LABEL[goal.baseline]}: pgpool-ts / ${TARGET_LABEL[goal.rival]}`,
    perRound: ours.map((x, i) => `${msStr(x)} / ${msStr(theirs[i] ?? null)} = ${ratioStr(ratios[i] ?? null)}`),
    median: `${ratioStr(mRatio)} (medians ${msStr(median(nums(ours)))} / ${msStr(median(nums(theirs)))})`,
    goal: `≤ ${times}${TARGET_LABEL[goal.rival]}'s` + (trouble === null ? '' : ` (${trouble})`),
    verdict: mRatio !== null && mRatio <= goal.factor && trouble === null ? 'PASS' : 'FALL SHORT',
  };
}

/** pgpool-ts's heap allocation per transaction beyond `over`'s, round by round. */
function compareHeap(runs: RunRecord[], rounds: number[], goal: Extract<Goal, { kind: 'heap' }>): Comparison {
  const heap = (t: TargetName, round: number) => runs.find((r) => r.target === t && r.round === round && ok(r))?.heapBytesPerTx ?? null;
  const pairs = rounds.map((round) => [heap('pgpool-ts', round), heap(goal.over, round)] as const);
  const extra = pairs.map(([a, b]) => (a === null || b === null ? null : a - b));
  const med = median(nums(extra));
  const trouble = pgpoolTrouble(runs);
  const bytes = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(0)} B`);
  return {
    label: `heap allocation per transaction: pgpool-ts − ${TARGET_LABEL[goal.over]}`,
    perRound: pairs.map(([a, b]) => `${bytes(a)} − ${bytes(b)}`),
    median: bytes(med),
    goal: `< ${goal.max} B` + (trouble === null ? '' : ` (${trouble})`),
    verdict: med !== null && med < goal.max && trouble === null ? 'PASS' : 'FALL SHORT',
  };
}

export function summarize(scenario: Scenario, runs: RunRecord[]): ScenarioSummary {
  const mine = runs.filter((r) => r.scenario === scenario.name);
  const rounds = [...new Set(mine.map((r) => r.round))].sort((a, b) => a - b);
  const targets = scenario.targets.map((t) => summarizeTarget(mine.filter((r) => r.target === t), t));
  const comparisons: Comparison[] = [];
  // Both headline ratios always show; a goal on one of them adds its verdict.
  for (const over of ['pgbouncer', 'direct'] as const) {
    if (!scenario.targets.includes(over)) continue;
    const goal = scenario.goals.find((g) => (g.kind === 'ratio' || g.kind === 'ratio-max') && g.over === over) ?? null;
    comparisons.push(compare(mine, rounds, goal, over, scenario.unit));
  }
  // What pgpool-ts's own work costs: its CPU per transaction against Node's floor and PgBouncer's.
  for (const over of ['floor', 'pgbouncer'] as const) {
    if (!scenario.targets.includes(over) || !mine.some((r) => r.target === over && r.poolerCpuUsPerTx !== null)) continue;
    const goal = scenario.goals.find((g) => g.kind === 'cpu' && g.over === over) ?? null;
    comparisons.push(compare(mine, rounds, goal, over, scenario.unit, true));
  }
  for (const g of scenario.goals) if (g.kind === 'added-latency') comparisons.push(compareAddedLatency(mine, rounds, g));
  for (const g of scenario.goals) if (g.kind === 'heap') comparisons.push(compareHeap(mine, rounds, g));
  return { scenario: scenario.name, unit: scenario.unit, lowerIsBetter: scenario.lowerIsBetter === true, targets, comparisons };
}

const fmtInt = (x: number | null) => (x === null ? 'n/a' : x < 100 ? x.toFixed(1) : Math.round(x).toLocaleString('en-US'));
const fmt = (x: number | null, digits: number) => (x === null ? 'n/a' : x.toFixed(digits));
const pct = (x: number | null) => (x === null ? 'n/a' : `${(x * 100).toFixed(0)}%`);

/** The two Markdown tables (stdout, results JSON, docs/benchmarks.md). */
export function renderTables(summaries: readonly ScenarioSummary[]): string {
  const out: string[] = [];
  // "others' CPU": the machine's CPU taken by processes outside the benchmark (noise indicator).
  // "median": TPS unless the unit says otherwise (connections/s, MB/s, KiB per client, ms p99).
  // "latency": pgbench's average, or the p50 login time of the load client's runs.
  // "connect": pgbench's initial connection time, with -C the average per connection, or the
  // load client's p99 login time.
  // "user µs/tx": of the pooler's CPU, the part in user space (its own code and Node's).
  // "heap B/tx": bytes the Node process allocated on V8's heap per transaction (bench/heap-meter.ts).
  // "PostgreSQL µs/tx", "idle": PostgreSQL's CPU per transaction and the machine's idle share,
  // where the rest of a throughput gap goes (bench/cpu.ts idleShare). "client µs/tx": the
  // client's CPU per transaction, the same work for every target: a gauge of the machine's speed.
  out.push("| scenario | target | median | min–max | latency | connect | pooler CPU µs/tx | user µs/tx | PostgreSQL µs/tx | client µs/tx | idle | heap B/tx | failed | ok runs | others' CPU |");
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of summaries) {
    for (const t of s.targets) {
      const unit = s.unit === 'TPS' ? '' : ` ${s.unit}`;
      out.push(
        `| ${s.scenario} | ${TARGET_LABEL[t.target]} | ${fmtInt(t.medianTps)}${unit} | ${fmtInt(t.minTps)}–${fmtInt(t.maxTps)} | ` +
          `${fmt(t.medianLatencyMs, 3)} ms | ${fmt(t.medianConnMs, 1)} ms | ${t.target === 'direct' ? '—' : fmt(t.medianCpuUsPerTx, 1)} | ` +
          `${t.target === 'direct' ? '—' : fmt(t.medianUserUsPerTx, 1)} | ` +
          `${fmt(t.medianPostgresCpuUsPerTx, 1)} | ${fmt(t.medianClientCpuUsPerTx, 1)} | ${pct(t.medianIdleShare)} | ` +
          `${t.medianHeapBytesPerTx === null ? '—' : fmt(t.medianHeapBytesPerTx, 0)} | ${t.failedTx} | ${t.okRuns}/${t.runs} | ${pct(t.medianOtherLoad)} |`,
      );
    }
  }
  out.push('');
  out.push('| scenario | comparison | per round | median | goal | verdict |');
  out.push('|---|---|---|---|---|---|');
  for (const s of summaries) {
    for (const c of s.comparisons) {
      out.push(`| ${s.scenario} | ${c.label} | ${c.perRound.join(', ')} | ${c.median} | ${c.goal} | ${c.verdict ?? '—'} |`);
    }
  }
  return out.join('\n');
}
