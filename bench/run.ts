// `npm run bench [-- --duration 15 --rounds 3 --scenarios a,b --quick --keep]`
//
// One command: a private PostgreSQL (initdb, pgbench -i), pgpool-ts and PgBouncer on the same ini,
// a naive proxy; then every scenario, targets alternating run by run (A B C D A B C D …) so that
// drift on the machine hits every target alike. Prints the tables, writes
// bench/results/<ISO time>.json and docs/benchmarks.svg. Shortfalls are reported, never fatal.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderChart } from './chart.js';
import { idleShare, otherLoad, sampleCpu, waitForBackendsGone, waitForQuiet, type CpuSample } from './cpu.js';
import { runPgbench } from './pgbench.js';
import { BENCH_DB, BENCH_PASSWORD, BENCH_USER, Cluster, PGBENCH_SCALE, SERVER_CONF, cleanEnv } from './postgres.js';
import { CLK_TCK, killAllSync, runCmd } from './procs.js';
import { renderTables, summarize, type RunRecord, type ScenarioSummary } from './report.js';
import { scramKeys, type Job, type LoadResult, type LoadSpec } from './loadclient.js';
import { SCENARIO_NAMES, scenarios, type RunContext, type Scenario } from './scenarios.js';
import { PLAIN, POOLER_SETTINGS, TARGET_ORDER, Targets, pgbouncerVersion, type Target, type TargetName } from './targets.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RESULTS_DIR = path.join(ROOT, 'bench/results');
const CHART = path.join(ROOT, 'docs/benchmarks.svg');
const LOADCLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loadclient.js');
/** Each target gets this long of pgbench -S first: warm buffer cache, JIT-compiled pooler. */
const WARMUP_S = 3;
/** Before each run, wait (≥ 1 s, so exiting backends and closing sockets settle; at most
 * --quiet-wait, 20 s by default) until other processes use under 20% of the machine. */
const QUIET_THRESHOLD = 0.2;

interface Options {
  durationS: number;
  rounds: number;
  /** Scenario names to run, in list order; null = all. */
  names: string[] | null;
  /** Targets to run (the others are left out of every scenario); null = all. */
  targets: TargetName[] | null;
  keep: boolean;
  keyType: 'ec' | 'rsa';
  /** Where the chart goes (default docs/benchmarks.svg). */
  chart: string;
  /** A results file to show again (tables and chart), measuring nothing. */
  render: string | null;
  copyMb: number;
  quietWaitS: number;
}

const USAGE = `usage: npm run bench -- [--duration SECONDS] [--rounds N] [--scenarios NAME,NAME] [--targets NAME,NAME] [--quick] [--rsa] [--copy-mb MB] [--quiet-wait S] [--keep]
  --duration  seconds per run (default 15)
  --rounds    rounds of all targets per scenario (default 3)
  --quick     5 s × 2 rounds, 256 MB COPY (explicit --duration/--rounds/--copy-mb still win)
  --scenarios subset to run: ${SCENARIO_NAMES.join(', ')}
  --targets   subset of targets: ${TARGET_ORDER.join(', ')} (direct is still started: COPY's setup uses it)
  --rsa       RSA 2048 certificates instead of ECDSA P-256
  --copy-mb   size of the COPY data (default 1024)
  --quiet-wait longest wait for a quiet machine before each run, seconds (default 20)
  --keep      keep the temp dir (cluster, inis, logs)
  --chart     write the chart here instead of docs/benchmarks.svg
  --render    RESULTS.json: print that run's tables and write its chart, measuring nothing
env: PGPOOL_BENCH_PG_BIN (PostgreSQL bin dir, default /usr/lib/postgresql/15/bin),
     PGPOOL_BENCH_PGBOUNCER (pgbouncer binary, default from PATH),
     PGPOOL_BENCH_NODE_ARGS (node flags for pgpool-ts, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"),
     PGPOOL_BENCH_LOAD_NODE_ARGS (node flags for bench/loadclient.js: the churn and idle scenarios)`;

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv: string[]): Options {
  let duration: number | null = null;
  let rounds: number | null = null;
  let quick = false;
  let keep = false;
  let chart = CHART;
  let render: string | null = null;
  let names: string[] | null = null;
  let targets: TargetName[] | null = null;
  let keyType: 'ec' | 'rsa' = 'ec';
  let copyMb: number | null = null;
  let quietWaitS = 20;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = () => argv[++i] ?? fail(`${arg} needs a value`);
    const positive = (v: string) => (Number.isInteger(Number(v)) && Number(v) > 0 ? Number(v) : fail(`${arg} wants a positive integer, not ${v}`));
    if (arg === '--duration') duration = positive(next());
    else if (arg === '--rounds') rounds = positive(next());
    else if (arg === '--quick') quick = true;
    else if (arg === '--keep') keep = true;
    else if (arg === '--chart') chart = path.resolve(next());
    else if (arg === '--render') render = path.resolve(next());
    else if (arg === '--rsa') keyType = 'rsa';
    else if (arg === '--copy-mb') copyMb = positive(next());
    else if (arg === '--quiet-wait') quietWaitS = positive(next());
    else if (arg === '--scenarios') names = next().split(',').map((s) => s.trim()).filter((s) => s !== '');
    else if (arg === '--targets') targets = next().split(',').map((s) => s.trim()).filter((s) => s !== '') as TargetName[];
    else if (arg === '-h' || arg === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else fail(`unknown argument ${arg}\n${USAGE}`);
  }
  for (const n of names ?? []) if (!SCENARIO_NAMES.includes(n)) fail(`unknown scenario ${n}; known: ${SCENARIO_NAMES.join(', ')}`);
  for (const t of targets ?? []) if (!TARGET_ORDER.includes(t)) fail(`unknown target ${t}; known: ${TARGET_ORDER.join(', ')}`);
  return { durationS: duration ?? (quick ? 5 : 15), rounds: rounds ?? (quick ? 2 : 3), names, targets, keep, keyType, chart, render, copyMb: copyMb ?? (quick ? 256 : 1024), quietWaitS };
}

function say(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

function cmdOutput(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

interface Environment {
  pgpoolTs: string;
  node: string;
  pgbouncer: string;
  postgres: string;
  pgbench: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  loadAverageAtStart: number[];
}

async function environment(cluster: Cluster): Promise<Environment> {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version?: string };
  const dirty = cmdOutput('git', ['status', '--porcelain', '--', 'src']) !== '';
  return {
    pgpoolTs: `${pkg.version ?? 'unknown'} (${cmdOutput('git', ['rev-parse', '--short', 'HEAD'])}${dirty ? ', src/ modified' : ''})`,
    node: process.version,
    pgbouncer: pgbouncerVersion(),
    postgres: await cluster.psql('SELECT version()'),
    pgbench: cmdOutput(cluster.bins.pgbench, ['--version']),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg(),
  };
}

/** The storm's load client (bench/stormclient.c), built once into the work dir; null when it cannot
 * be built (no C compiler or OpenSSL headers: apt-get install -y gcc libssl-dev), and the storm then
 * runs on bench/loadclient.js, which takes most of a 2-core machine's CPU itself. */
let stormClient: string | null | undefined;

function buildStormClient(dir: string): string | null {
  if (stormClient !== undefined) return stormClient;
  const out = path.join(dir, 'stormclient');
  try {
    execFileSync('cc', ['-O2', '-o', out, path.join(ROOT, 'bench/stormclient.c'), '-lssl', '-lcrypto'], { stdio: ['ignore', 'ignore', 'pipe'] });
    stormClient = out;
  } catch (err) {
    const why = ((err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message).split('\n')[0];
    say(`bench/stormclient.c was not built (${why}): the storm runs on the Node load client (apt-get install -y gcc libssl-dev)`);
    stormClient = null;
  }
  return stormClient;
}

/** Run a load job in its own process with the descriptor limit raised: a storm on the C client
 * where it builds, the rest on bench/loadclient.js; an idle job watches the target's RSS. */
async function runLoad(target: Target, job: Job, secret: string, dir: string, abort: AbortSignal): Promise<LoadResult> {
  const spec: LoadSpec = {
    target: { host: '127.0.0.1', port: target.port, tls: target.flavor.tls, user: BENCH_USER, database: BENCH_DB, password: BENCH_PASSWORD, secret },
    job: job.mode === 'idle' ? { ...job, rssPid: target.proc?.pid ?? null } : job,
  };
  const script = 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"';
  const limitS = job.mode === 'churn' ? job.durationS + 60 : 600;
  const native = job.mode === 'storm' && target.flavor.tls ? buildStormClient(dir) : null;
  let argv: string[];
  if (native !== null && job.mode === 'storm') {
    const keys = scramKeys(BENCH_PASSWORD, secret);
    argv = [native, '127.0.0.1', String(target.port), BENCH_USER, BENCH_DB, keys.clientKey.toString('hex'), keys.serverKey.toString('hex'), String(job.total), String(job.concurrency), String(job.timeoutMs)];
  } else {
    const nodeArgs = (process.env.PGPOOL_BENCH_LOAD_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    argv = [process.execPath, ...nodeArgs, LOADCLIENT, JSON.stringify(spec)];
  }
  const r = await runCmd('bash', ['-c', script, ...argv], { env: cleanEnv(), timeoutMs: limitS * 1000, abort });
  if (r.code !== 0) throw new Error(`load client exited with ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.slice(-400)}`);
  return JSON.parse(r.stdout) as LoadResult;
}

/**
 * A fresh machine has no PgBouncer: install Debian's, as root, without letting the package start
 * its own service on 6432 (a policy-rc.d that answers "not allowed", removed afterwards).
 */
function installPgbouncer(): void {
  if (process.getuid?.() !== 0) return say('pgbouncer not found, and installing it needs root: apt-get install -y pgbouncer');
  say('pgbouncer not found: apt-get install -y pgbouncer');
  const script = `set -e
own_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1; fi
trap '[ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends pgbouncer </dev/null || { apt-get update -qq </dev/null; apt-get install -y -qq --no-install-recommends pgbouncer </dev/null; }`;
  try {
    execFileSync('bash', ['-c', script], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  } catch (err) {
    say(`installing pgbouncer failed: ${(err as Error).message.split('\n')[0]}`);
  }
}

function fmtRun(r: RunRecord): string {
  const m = r.metrics;
  if (m.error !== null) return `ERROR: ${m.error}`;
  const each = r.poolerCpuUsPerTxByProcess;
  const byProcess = each === undefined ? '' : ` (main ${each[0]!.toFixed(1)}, workers ${each.slice(1).map((x) => x.toFixed(1)).join(' + ')})`;
  if (m.detail !== undefined) return `${m.tps?.toFixed(1)} (${m.detail})${byProcess}`;
  const user = r.poolerUserUsPerTx == null ? '' : ` (user space ${r.poolerUserUsPerTx.toFixed(1)})`;
  const cpu = r.poolerCpuUsPerTx === null ? '' : `, pooler CPU ${r.poolerCpuUsPerTx.toFixed(1)} µs/tx${user}${byProcess}`;
  const heap = r.heapBytesPerTx === null ? '' : `, heap ${r.heapBytesPerTx.toFixed(0)} B/tx`;
  const failed = m.failed ? `, ${m.failed} failed` : '';
  const postgres = r.postgresCpuUsPerTx == null ? '' : `, PostgreSQL ${r.postgresCpuUsPerTx.toFixed(1)} µs/tx`;
  const client = r.clientCpuUsPerTx == null ? '' : `, client ${r.clientCpuUsPerTx.toFixed(1)} µs/tx`;
  const idle = r.idleShare == null ? '' : `, ${(r.idleShare * 100).toFixed(0)}% idle`;
  const others = r.otherLoad === null ? '' : `, others ${(r.otherLoad * 100).toFixed(0)}% of the machine`;
  const waited = r.quietWaitS >= 2 ? ` (after waiting ${r.quietWaitS.toFixed(0)} s for a quiet machine)` : '';
  return `${m.tps?.toFixed(0)} tps, ${m.latencyMs?.toFixed(3)} ms${cpu}${postgres}${client}${idle}${heap}${failed}${others}${waited}`;
}

/** Clock ticks per transaction, in µs. */
function perTx(ticks: number, transactions: number | null): number | null {
  return transactions ? ((ticks / CLK_TCK) * 1e6) / transactions : null;
}

/** One run of one scenario on one target, with the pooler's CPU time around it. */
async function runOne(
  scenario: Scenario,
  target: Target,
  round: number,
  ctx: RunContext,
  cpu: { sample: () => CpuSample; postmaster: number | null },
  quietWaitS: number,
): Promise<RunRecord> {
  let note: string | null = null;
  if (target.proc !== null && !target.proc.alive()) {
    // A dead pooler is a result (kept in the note and the log tail), not the end of the bench.
    note = `${target.name} had exited (${JSON.stringify(target.proc.status)}); restarted before this run`;
    say(note);
    await target.start();
  }
  const proc = target.proc;
  const heapBefore = await target.heapBytes();
  const before = target.cpuTicks();
  const userBefore = target.userTicks();
  const machineBefore = cpu.sample();
  const startedAt = new Date().toISOString();
  const metrics = await scenario.run(target, ctx);
  const after = target.cpuTicks();
  const userAfter = target.userTicks();
  await waitForBackendsGone(cpu.postmaster, 5_000);
  const heapAfter = heapBefore === null ? null : await target.heapBytes();
  const machineAfter = cpu.sample();
  const load = otherLoad(machineBefore, machineAfter);
  if (proc !== null && !proc.alive()) {
    metrics.error ??= `${target.name} exited during the run (${JSON.stringify(proc.status)})`;
  }
  const sum = (t: number[]): number => t.reduce((a, b) => a + b, 0);
  const poolerCpuS = before !== null && after !== null ? (sum(after) - sum(before)) / CLK_TCK : null;
  // A multi-process pooler: the CPU of each process per transaction of the whole run (the main
  // process first), so the cost of one more worker on a larger machine can be read off.
  const byProcess =
    before !== null && after !== null && after.length > 1 && after.length === before.length && metrics.transactions
      ? after.map((t, i) => (((t - before[i]!) / CLK_TCK) * 1e6) / metrics.transactions!)
      : undefined;
  return {
    scenario: scenario.name,
    round,
    target: target.name,
    startedAt,
    metrics,
    poolerCpuS,
    poolerCpuUsPerTx: poolerCpuS !== null && metrics.transactions ? (poolerCpuS * 1e6) / metrics.transactions : null,
    ...(byProcess === undefined ? {} : { poolerCpuUsPerTxByProcess: byProcess }),
    poolerUserUsPerTx: userBefore !== null && userAfter !== null ? perTx(userAfter - userBefore, metrics.transactions) : null,
    heapBytesPerTx: heapBefore !== null && heapAfter !== null && metrics.transactions ? (heapAfter - heapBefore) / metrics.transactions : null,
    otherLoad: load,
    postgresCpuUsPerTx: perTx(machineAfter.postgres - machineBefore.postgres, metrics.transactions),
    clientCpuUsPerTx: perTx(machineAfter.clients - machineBefore.clients, metrics.transactions),
    idleShare: idleShare(machineBefore, machineAfter),
    quietWaitS,
    note,
    poolerLogTail: metrics.error !== null && proc !== null ? proc.logTail(100) : null,
  };
}

function chartCaption(rounds: number, durationS: number, startedAt: string, env: Environment): string[] {
  return [
    `${rounds} × ${durationS} s runs per target, alternating; bar = median, whiskers = min–max; ${startedAt.slice(0, 16)}Z`,
    `${env.postgres.split(' on ')[0]} · ${env.pgbouncer} · node ${env.node} · ${env.cpus} CPUs`,
  ];
}

/** --render: a past run's tables and chart, from its results file. */
function renderPast(file: string, chart: string): number {
  const r = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    options: { rounds: number; durationS: number };
    startedAt: string;
    environment: Environment;
    summaries: ScenarioSummary[];
  };
  process.stdout.write(`${renderTables(r.summaries)}\n`);
  fs.writeFileSync(chart, renderChart(r.summaries, chartCaption(r.options.rounds, r.options.durationS, r.startedAt, r.environment)));
  say(`chart: ${path.relative(ROOT, chart)}`);
  return 0;
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.render !== null) return renderPast(opts.render, opts.chart);
  let bouncer = pgbouncerVersion();
  if (!bouncer.startsWith('PgBouncer') && !process.env.PGPOOL_BENCH_PGBOUNCER) {
    installPgbouncer();
    bouncer = pgbouncerVersion();
  }
  if (!bouncer.startsWith('PgBouncer')) fail(`PgBouncer is needed for the comparison: ${bouncer}\n  apt-get install -y pgbouncer`);

  const abort = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    // First Ctrl-C: stop after cleaning up properly. Second: kill everything now.
    if (++signals > 1) {
      killAllSync();
      process.exit(130);
    }
    say(`${sig}: stopping the current run and cleaning up (again to kill at once)`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const stamp = new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-bench-'));
  // PostgreSQL and PgBouncer run as `postgres` and must reach their files in here.
  fs.chmodSync(tmp, 0o755);
  say(`work dir ${tmp}`);
  let targets: Targets | null = null;
  let cluster: Cluster | null = null;
  const runs: RunRecord[] = [];
  const startedAt = new Date().toISOString();
  let selected: Scenario[] = [];
  try {
    cluster = await Cluster.allocate(tmp);
    await cluster.setup(say, opts.keyType);
    const c = cluster;
    const secret = await c.benchSecret();
    const ts = await Targets.create(c, tmp);
    targets = ts;
    let direct: Target | null = null;
    const all = scenarios(() => direct ?? fail('direct target not ready'));
    selected = (opts.names === null ? all : all.filter((s) => opts.names!.includes(s.name))).map((s) =>
      opts.targets === null ? s : { ...s, targets: s.targets.filter((t) => opts.targets!.includes(t)) },
    );
    direct = await ts.get('direct', PLAIN);
    const env = await environment(cluster);
    say(`${env.postgres} | ${env.pgbouncer} | node ${env.node} | ${env.cpus} CPUs | ${opts.keyType === 'ec' ? 'ECDSA P-256' : 'RSA 2048'} certificates`);
    const ctx: RunContext = {
      durationS: opts.durationS,
      pgbench: c.bins.pgbench,
      psql: c.bins.psql,
      env: (t) => c.benchEnv(t.port, t.flavor.tls),
      load: (t, job) => runLoad(t, job, secret, tmp, abort.signal),
      dir: tmp,
      copyMb: opts.copyMb,
      abort: abort.signal,
    };
    const cpu = { sample: () => sampleCpu(c.pid, ts.pids()), postmaster: c.pid };

    // Each target gets WARMUP_S of pgbench -S the first time it is used: warm buffer cache,
    // JIT-compiled pooler, TLS session state.
    const warmed = new Set<Target>();
    const warm = async (t: Target) => {
      if (warmed.has(t)) return;
      warmed.add(t);
      const r = await runPgbench(['-S', '-n', '-c', '8', '-j', '2'], { pgbench: c.bins.pgbench, env: ctx.env(t), durationS: WARMUP_S, clients: 8, abort: abort.signal });
      if (r.error !== null) say(`warm-up ${t.name} failed: ${r.error}`);
    };

    const total = selected.reduce((n, s) => n + s.targets.length * opts.rounds, 0);
    let n = 0;
    outer: for (const scenario of selected) {
      if (scenario.prepare !== undefined) {
        say(`preparing ${scenario.name}`);
        await scenario.prepare(ctx);
      }
      for (let round = 1; round <= opts.rounds; round++) {
        for (const name of scenario.targets) {
          if (abort.signal.aborted) break outer;
          n++;
          let rec: RunRecord;
          let quietWaitS = 0;
          try {
            const target = await ts.get(name, scenario.flavor);
            if (target === null) continue;
            if (scenario.fresh === true && target.proc !== null) {
              await target.stop();
              await target.start();
            } else await warm(target);
            quietWaitS = await waitForQuiet(cpu.sample, QUIET_THRESHOLD, opts.quietWaitS * 1000, abort.signal);
            process.stderr.write(`[bench] ${n}/${total} ${scenario.name} round ${round}/${opts.rounds} ${name} … `);
            rec = await runOne(scenario, target, round, ctx, cpu, quietWaitS);
          } catch (err) {
            // E.g. a pooler that will not (re)start: this run fails, the others still happen.
            const error = (err as Error).message;
            rec = { scenario: scenario.name, round, target: name, startedAt: new Date().toISOString(), metrics: { tps: null, latencyMs: null, transactions: null, failed: null, connTimeMs: null, error, output: null }, poolerCpuS: null, poolerCpuUsPerTx: null, heapBytesPerTx: null, otherLoad: null, quietWaitS, note: null, poolerLogTail: null };
          }
          if (abort.signal.aborted) {
            // A run cut short by Ctrl-C says nothing about the target.
            process.stderr.write('interrupted\n');
            break outer;
          }
          runs.push(rec);
          process.stderr.write(fmtRun(rec) + '\n');
        }
      }
    }

    const interrupted = abort.signal.aborted;
    const summaries = selected.map((s) => summarize(s, runs)).filter((s) => s.targets.some((t) => t.runs > 0));
    const table = renderTables(summaries);
    process.stdout.write(`\n${table}\n\n`);

    fs.mkdirSync(RESULTS_DIR, { recursive: true });
    const resultFile = path.join(RESULTS_DIR, `${stamp}.json`);
    const failedTargets = [...new Set(runs.filter((r) => r.metrics.error !== null).map((r) => r.target))];
    const keptLogs: string[] = [];
    for (const name of failedTargets) {
      // The temp dir goes away; a failing target's full log is worth keeping next to the numbers.
      const src = path.join(tmp, `${name}.log`);
      if (!fs.existsSync(src)) continue;
      const dst = path.join(RESULTS_DIR, `${stamp}-${name}.log`);
      fs.copyFileSync(src, dst);
      keptLogs.push(path.relative(ROOT, dst));
    }
    const result = {
      startedAt,
      finishedAt: new Date().toISOString(),
      interrupted,
      command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
      options: { durationS: opts.durationS, rounds: opts.rounds, scenarios: selected.map((s) => s.name), keyType: opts.keyType, copyMb: opts.copyMb, quietWaitS: opts.quietWaitS },
      environment: env,
      settings: { postgres: SERVER_CONF, pgbenchScale: PGBENCH_SCALE, pooler: POOLER_SETTINGS, clockTicksPerSecond: CLK_TCK },
      scenarios: selected.map(({ name, description, unit, flavor, targets: t, goals }) => ({ name, description, unit, flavor, targets: t, goals })),
      runs,
      summaries,
      table,
      keptLogs,
    };
    fs.writeFileSync(resultFile, JSON.stringify(result, null, 2) + '\n');
    say(`results: ${path.relative(ROOT, resultFile)}`);
    for (const l of keptLogs) say(`log of a failing target: ${l}`);
    if (!interrupted) {
      fs.writeFileSync(opts.chart, renderChart(summaries, chartCaption(opts.rounds, opts.durationS, startedAt, env)));
      say(`chart: ${path.relative(ROOT, opts.chart)}`);
    }
    return interrupted ? 130 : 0;
  } finally {
    say('stopping targets and PostgreSQL');
    await targets?.stopAll();
    await cluster?.stop().catch(() => undefined);
    if (opts.keep) say(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
