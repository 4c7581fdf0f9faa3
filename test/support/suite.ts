// Suite plumbing shared by the integration tests: accessors for what a `before` hook started,
// printing the logs once when a test failed, a file-wide cluster (and pooler) with its hooks, and
// reading the pooler's JSON log lines.

import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { startCluster, type Cluster, type ClusterOptions } from './pg-cluster.js';
import { startPooler, type ExitStatus, type IniSections, type Pooler, type PoolerOptions } from './pooler.js';

/** An accessor for something a `before` hook starts: the value, or a failure naming `what`. */
export function required<T>(get: () => T | undefined, what: string): () => T {
  return () => {
    const v = get();
    assert.ok(v, `${what} did not start`);
    return v;
  };
}

export interface LogSources {
  poolers?: () => (Pooler | undefined)[];
  clusters?: () => (Cluster | undefined)[];
  /** Print only the last N lines of each pooler's output (all of it unless set). */
  poolerLines?: number;
  /** Print only the last N lines of each cluster's log (all of it unless set). */
  clusterLines?: number;
}

export interface FailureTracker {
  /** Whether a test of the suite has failed so far. */
  readonly failed: boolean;
}

/**
 * Track failures of the tests of the calling suite; print the poolers' output and the clusters'
 * logs once, in an `after` hook registered here (so before the suite's later `after` hooks).
 */
export function dumpLogsOnFailure(sources: LogSources): FailureTracker {
  let failed = false;
  afterEach((t) => {
    if ('passed' in t && !t.passed) failed = true;
  });
  after(async () => {
    if (!failed) return;
    const last = (n: number | undefined) => (n === undefined ? '' : ` (last ${n} lines)`);
    for (const p of sources.poolers?.() ?? []) {
      if (p === undefined) continue;
      const lines = sources.poolerLines === undefined ? p.logs() : p.logs().slice(-sources.poolerLines);
      console.error(`--- pooler ${p.port} (${p.iniPath})${last(sources.poolerLines)} ---\n${lines.join('\n')}`);
    }
    for (const c of sources.clusters?.() ?? []) {
      if (c === undefined) continue;
      const log = await c.readLog();
      const text = sources.clusterLines === undefined ? log : log.split('\n').slice(-sources.clusterLines).join('\n');
      console.error(`--- ${c.logFile}${last(sources.clusterLines)} ---\n${text}`);
    }
  });
  return {
    get failed() {
      return failed;
    },
  };
}

/** A pooler a suite starts in a `before` hook and stops in an `after` hook. */
export interface PoolerSpec {
  ini: () => IniSections;
  options?: PoolerOptions;
  /** SIGTERM, then SIGKILL after this long (stop()'s default unless set). */
  stopTimeoutMs?: number;
  /** Once it stopped (before a cluster under it goes). */
  stopped?: (status: ExitStatus, pooler: Pooler) => Promise<unknown> | void;
}

async function stopSpec(spec: PoolerSpec, pooler: Pooler | undefined): Promise<void> {
  if (pooler === undefined) return;
  const status = await pooler.stop('SIGTERM', spec.stopTimeoutMs);
  await spec.stopped?.(status, pooler);
}

export interface PoolerHandle {
  /** The pooler; fails if it did not start. */
  p(): Pooler;
  readonly pooler: Pooler | undefined;
}

/**
 * A pooler for the calling suite (started in `before`, stopped in `after`); with `dumpLogs`, its
 * output (and the given clusters' logs) is printed once if a test of the suite failed.
 */
export function usePooler(spec: PoolerSpec & { dumpLogs?: Omit<LogSources, 'poolers'> }): PoolerHandle {
  let pooler: Pooler | undefined;
  before(async () => {
    pooler = await startPooler(spec.ini(), spec.options);
  });
  if (spec.dumpLogs !== undefined) dumpLogsOnFailure({ poolers: () => [pooler], ...spec.dumpLogs });
  after(() => stopSpec(spec, pooler));
  return {
    p: required(() => pooler, 'pooler'),
    get pooler() {
      return pooler;
    },
  };
}

export interface SetupOptions {
  cluster: ClusterOptions;
  /** LOGIN roles to create (no password: the harness hba trusts them over TCP). */
  roles?: readonly string[];
  /** More setup of the running cluster (tables, data), before the pooler starts. */
  prepare?: (cluster: Cluster) => Promise<void>;
  /** A pooler over the cluster, started after it and stopped before it. */
  pooler?: PoolerSpec;
  /** Once everything runs (e.g. traffic the tests look at). At the top level of a file, Node 20
   * starts the `before` hooks without waiting for the previous one: work that needs the cluster
   * or the pooler goes here, not in a `before` of its own. */
  started?: () => Promise<void>;
  /** Print the pooler's output and the cluster's log once if a test failed. */
  dumpLogs?: Pick<LogSources, 'poolerLines' | 'clusterLines'>;
}

export interface Setup extends PoolerHandle {
  /** The cluster; fails if it did not start. */
  c(): Cluster;
  readonly cluster: Cluster | undefined;
}

/**
 * A cluster (and a pooler) for the calling suite: started in a `before` hook; the pooler stopped
 * and the cluster destroyed in one `after` hook, in that order.
 */
export function useSetup(opts: SetupOptions): Setup {
  let cluster: Cluster | undefined;
  let pooler: Pooler | undefined;
  before(async () => {
    cluster = await startCluster(opts.cluster);
    for (const r of opts.roles ?? []) await cluster.query(`CREATE ROLE ${r} LOGIN`, 'postgres');
    await opts.prepare?.(cluster);
    if (opts.pooler !== undefined) pooler = await startPooler(opts.pooler.ini(), opts.pooler.options);
    await opts.started?.();
  });
  if (opts.dumpLogs !== undefined) dumpLogsOnFailure({ poolers: () => [pooler], clusters: () => [cluster], ...opts.dumpLogs });
  after(async () => {
    if (opts.pooler !== undefined) await stopSpec(opts.pooler, pooler);
    await cluster?.destroy();
  });
  return {
    c: required(() => cluster, 'cluster'),
    p: required(() => pooler, 'pooler'),
    get cluster() {
      return cluster;
    },
    get pooler() {
      return pooler;
    },
  };
}

// ------------------------------------------------------------------------------------------------
// The pooler's log

/** One line of the pooler's log, in either log_format: its level, the connection it is about (when
 * it is about one) and its message; `json` holds every field of a JSON line. */
export interface LogLine {
  readonly level: string;
  readonly id?: string;
  readonly db?: string;
  readonly user?: string;
  readonly addr?: string;
  readonly msg: string;
  readonly json: Record<string, unknown> | null;
}

/** PgBouncer's text line: `2026-12-07 06:03:29.652 UTC [42] LOG C-0x1f: p0/app@127.0.0.1:40560 msg`. */
const TEXT_LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] ([A-Z]+) (?:([CS]-0x[0-9a-f]+): ([^/ ]*)\/([^@ ]*)@(\S*) )?(.*)$/;

/** A pooler log line taken apart; a line in neither format is all message. */
export function parseLogLine(line: string): LogLine {
  const t = TEXT_LINE.exec(line);
  if (t !== null) {
    const [, level, id, db, user, addr, msg] = t;
    return id === undefined ? { level: level!, msg: msg!, json: null } : { level: level!, id, db, user, addr, msg: msg!, json: null };
  }
  try {
    const o = JSON.parse(line) as Record<string, unknown>;
    const str = (k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
    return { level: str('level') ?? '', id: str('id'), db: str('db'), user: str('user'), addr: str('addr'), msg: str('msg') ?? line, json: o };
  } catch {
    return { level: '', msg: line, json: null };
  }
}

/** The message of a pooler log line (text or JSON; the line itself when it is neither). */
export function messageOf(line: string): string {
  return parseLogLine(line).msg;
}

/**
 * The first line of the pooler's output at or after index `from` that `match` accepts, looked for
 * every `pollMs` until `timeoutMs` has passed; null if none came.
 */
export async function findLogLine(p: Pooler, from: number, match: (line: string) => boolean, timeoutMs = 3_000, pollMs = 20): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = p.logs().slice(from).find(match);
    if (line !== undefined) return line;
    if (Date.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** The first pooler log line at or after index `from` whose message matches (the raw JSON line). */
export async function logSince(p: Pooler, from: number, pattern: RegExp, timeoutMs = 3_000): Promise<string> {
  const line = await findLogLine(p, from, (l) => pattern.test(messageOf(l)), timeoutMs);
  if (line === null) throw new Error(`no pooler log line matching ${pattern} since line ${from}:\n${p.logs().slice(from).join('\n')}`);
  return line;
}
