// How busy the machine was with work that is not the benchmark's. On a shared 2-core box a test
// suite running elsewhere can halve a run's TPS; the bench cannot stop that, but it can wait for a
// quiet moment before each run and say, per run, how much CPU others took.
//
// "Ours" is every process the benchmark runs: this node process and its reaped children (pgbench,
// psql) via cutime/cstime, each proxy, and the postmaster with its backends (live ones read
// directly, exited ones folded into the postmaster's cutime/cstime when it reaps them).

import fs from 'node:fs';
import os from 'node:os';
import { CLK_TCK, sleep, statFields } from './procs.js';

export interface CpuSample {
  atMs: number;
  /** Machine-wide non-idle ticks, all CPUs. */
  busy: number;
  /** Machine-wide idle ticks (iowait included), all CPUs. */
  idle: number;
  /** Ticks used by the benchmark's own processes. */
  ours: number;
  /** Of those, the postmaster's and its backends'. */
  postgres: number;
  /** Of those, the bench's reaped children: the clients (pgbench, the load client), psql. */
  clients: number;
}

/** utime + stime (+ cutime + cstime of reaped children when `reaped`). */
function ticks(f: string[] | null, reaped: boolean): number {
  if (f === null) return 0;
  const own = Number(f[11]) + Number(f[12]);
  return reaped ? own + Number(f[13]) + Number(f[14]) : own;
}

function childrenStats(pid: number): string[][] {
  const out: string[][] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f !== null && Number(f[1]) === pid) out.push(f);
  }
  return out;
}

/** A process and its direct children (the postmaster's backends, a multi-worker pooler's workers). */
function treeTicks(pid: number): number {
  return childrenStats(pid).reduce((n, f) => n + ticks(f, false), ticks(statFields(pid), true));
}

/** Of a process's ticks, those spent in user space: utime (+ cutime when `reaped`). Beside the
 * total, this tells a relay's own code (and Node's, V8's, libuv's) from the kernel's socket work,
 * which every relay pays alike. */
function userTicks(f: string[] | null, reaped: boolean): number {
  if (f === null) return 0;
  return reaped ? Number(f[11]) + Number(f[13]) : Number(f[11]);
}

/** User-space ticks of `pid`, or with `tree` of `pid`, its reaped children and its live ones (as
 * processTreeTicks counts them). */
export function processUserTicks(pid: number, tree: boolean): number {
  const own = userTicks(statFields(pid), tree);
  return tree ? childrenStats(pid).reduce((n, f) => n + userTicks(f, false), own) : own;
}

/** Ticks of `pid` (its reaped children included) and of each live child, `pid` first. */
export function processTreeTicks(pid: number): number[] {
  return [ticks(statFields(pid), true), ...childrenStats(pid).map((f) => ticks(f, false))];
}

/**
 * Wait (≤ `maxMs`) until the postmaster has reaped the backends of a finished run. A backend in
 * the middle of exiting is neither a live child nor yet in the postmaster's cutime, so sampling
 * then loses its CPU time (measured: a third of a 32-client direct run).
 */
export async function waitForBackendsGone(postmaster: number | null, maxMs: number): Promise<void> {
  if (postmaster === null) return;
  const deadline = Date.now() + maxMs;
  let last = -1;
  for (;;) {
    const kids = childrenStats(postmaster);
    const exiting = kids.some((f) => f[0] === 'Z' || f[0] === 'X');
    if ((!exiting && kids.length === last) || Date.now() > deadline) return;
    last = kids.length;
    await sleep(100);
  }
}

function machineTicks(): { busy: number; idle: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user).
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1).map(Number);
  return { busy: user + nice + system + irq + softirq + steal, idle: idle + iowait };
}

export function sampleCpu(postmaster: number | null, proxies: readonly number[]): CpuSample {
  const self = statFields('self');
  let ours = ticks(self, true);
  for (const pid of proxies) ours += treeTicks(pid);
  const postgres = postmaster === null ? 0 : treeTicks(postmaster);
  const clients = self === null ? 0 : Number(self[13]) + Number(self[14]);
  return { atMs: Date.now(), ...machineTicks(), ours: ours + postgres, postgres, clients };
}

/**
 * Share of the machine's CPU (0–1) left idle between a and b. On 2 cores shared by pgbench,
 * PostgreSQL and the pooler, a pooler slower per message leaves cores idle while the others wait
 * for it: its throughput gap to PgBouncer is its extra CPU plus that idle time.
 */
export function idleShare(a: CpuSample, b: CpuSample): number {
  const total = b.busy - a.busy + b.idle - a.idle;
  return total <= 0 ? 0 : (b.idle - a.idle) / total;
}

/** Share of the machine's total CPU capacity (0–1) used by other processes between a and b. */
export function otherLoad(a: CpuSample, b: CpuSample): number {
  const capacity = ((b.atMs - a.atMs) / 1000) * CLK_TCK * os.cpus().length;
  if (capacity <= 0) return 0;
  return Math.max(0, Math.min(1, (b.busy - a.busy - (b.ours - a.ours)) / capacity));
}

/**
 * Wait (in 1 s windows, at most `maxWaitMs`) until other processes use less than `threshold` of
 * the machine; returns the seconds waited.
 */
export async function waitForQuiet(sample: () => CpuSample, threshold: number, maxWaitMs: number, abort: AbortSignal): Promise<number> {
  const start = Date.now();
  while (!abort.aborted && Date.now() - start < maxWaitMs) {
    const a = sample();
    await sleep(1_000);
    if (otherLoad(a, sample()) < threshold) break;
  }
  return (Date.now() - start) / 1000;
}
