// The main process of a multi-worker instance (`workers` > 1): it starts that many worker
// processes (main.js again, as workers: worker-link.ts), which share the TCP port through
// SO_REUSEPORT, and makes them one pooler to operate:
// - limits count for the instance (limits.ts): workers ask here before admitting a client or
//   opening a server connection;
// - the console's SHOWs and commands run in every worker and their answers are merged
//   (admin/merge.ts); RELOAD is checked here first, so every worker reloads or none does;
// - signals are passed on with PgBouncer's meaning; SHUTDOWN stops the whole instance;
// - /metrics adds up the workers' series (prom-client's cluster aggregation), /healthz asks them;
// - the instance's unix socket is here: each connection is handed to a worker, unread;
// - a worker that dies is started again after a backoff; its clients are lost, the others' are not.
// Cancel keys name the worker that minted them (cancel-keys.ts); a worker forwards a cancel for
// another worker's client to that worker's own unix socket in the instance's private directory.
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mergeShow } from '../admin/merge.js';
import type { ConsoleOutcome } from '../admin/console.js';
import { authRules, type ShutdownMode } from '../app.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/types.js';
import { flushLog, log } from '../log.js';
import { aggregateSeries, serveMetrics, type MetricsServer } from '../metrics/prometheus.js';
import { openListeners, type Listeners } from '../net/listener.js';
import { buildTlsContexts } from '../net/tls.js';
import { InstanceLimits, type SlotRequest } from './limits.js';
import { Rpc, type Answers, type ToMain, type ToWorker } from './protocol.js';
import { WORKER_ENV, workerSocketDir } from './worker-link.js';

/** Restart delays of a worker that keeps dying: 0.5 s doubling up to 30 s; a worker that lived
 * RESTART_RESET_MS starts the count again. */
const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;
const RESTART_RESET_MS = 30_000;
/** How often waiting server slots ask the workers to free an idle server. */
const EVICT_EVERY_MS = 250;
/** A worker that does not hold more servers than the one waiting gives up only a server idle at
 * least this long (limits.ts evictionCandidates). */
const UNUSED_IDLE_MS = 1_000;

const SIGNAL_OF: Readonly<Record<ShutdownMode, NodeJS.Signals>> = {
  immediate: 'SIGQUIT',
  wait_for_clients: 'SIGTERM',
  wait_for_servers: 'SIGINT',
};

class Worker {
  child: ChildProcess | null = null;
  rpc: Rpc<ToWorker> | null = null;
  ready = false;
  startedAt = 0;
  failures = 0;
  restart: NodeJS.Timeout | null = null;

  constructor(readonly index: number) {}
}

export class Supervisor {
  private readonly workers: Worker[];
  private readonly limits = new InstanceLimits();
  private readonly dir: string;
  private stopping = false;
  private listeners: Listeners | null = null;
  private metrics: MetricsServer | null = null;
  private evictTimer: NodeJS.Timeout | null = null;
  private evicting = false;
  private nextUnix = 0;
  /** Every worker started once: from now on a worker that exits is started again. */
  private up = false;
  private exitResolve: () => void = () => undefined;
  /** Resolves once every worker has exited after a stop. */
  readonly exited = new Promise<void>((r) => (this.exitResolve = r));

  constructor(
    private cfg: Config,
    /** main.js and the arguments it was started with, to start the workers the same way. */
    private readonly entry: string,
    private readonly argv: readonly string[],
  ) {
    this.workers = Array.from({ length: cfg.workers }, (_, i) => new Worker(i + 1));
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-ts-workers-'));
    fs.chmodSync(this.dir, 0o755);
    for (const w of this.workers) fs.mkdirSync(workerSocketDir(this.dir, w.index), { mode: 0o755 });
  }

  /** Start every worker and wait until all listen; then the unix socket and the metrics. A worker
   * that cannot start fails the whole start (its reason is on stderr). */
  async start(): Promise<void> {
    const started = await Promise.all(this.workers.map((w) => this.spawn(w)));
    if (started.includes(false)) {
      this.stopping = true;
      for (const w of this.workers) w.child?.kill('SIGKILL');
      this.cleanup();
      throw new Error('a worker could not start');
    }
    this.up = true;
    const cfg = this.cfg;
    if (cfg.unixSocketDir !== '') {
      const role = { tcp: false, reusePort: false, unixDir: cfg.unixSocketDir, ownPeer: true, pauseOnConnect: true };
      this.listeners = await openListeners(cfg, this.handOver, role);
      for (const a of this.listeners.addresses) log().info(`listening on ${a}`);
    }
    if (cfg.metricsPort > 0) {
      this.metrics = await serveMetrics(cfg.metricsListenAddr, cfg.metricsPort, {
        text: async () => aggregateSeries((await this.askMetrics()).map((m) => m.series)),
        health: async () => (this.stopping ? 'shutting down' : ((await this.askMetrics()).find((m) => m.health !== null)?.health ?? null)),
      });
      log().info(`metrics on http://${cfg.metricsListenAddr}:${this.metrics.port}/metrics`);
    }
    log().info({ workers: this.workers.length, pids: this.workers.map((w) => w.child?.pid) }, `instance of ${this.workers.length} workers up`);
  }

  /** Start worker `w`; resolves true once it listens, false if it exited first. */
  private spawn(w: Worker): Promise<boolean> {
    const child = fork(this.entry, [...this.argv], {
      env: { ...process.env, [WORKER_ENV]: `${w.index}/${this.workers.length}/${this.dir}` },
      serialization: 'advanced',
      stdio: 'inherit',
      // A process group of its own: a terminal's Ctrl-C reaches the main process only, which
      // passes it on once (a second SIGINT would mean "exit at once").
      detached: true,
    });
    w.child = child;
    w.ready = false;
    w.startedAt = Date.now();
    const rpc = new Rpc<ToWorker>((m) => {
      if (child.connected) child.send(m);
    });
    w.rpc = rpc;
    return new Promise((resolve) => {
      child.on('message', (m: ToMain) => {
        if (m.t === 'ready') {
          w.ready = true;
          resolve(true);
        } else this.onMessage(w, m);
      });
      child.once('exit', (code, signal) => {
        resolve(false);
        this.onExit(w, child, code, signal);
      });
    });
  }

  private onMessage(w: Worker, m: ToMain): void {
    const rpc = w.rpc!;
    switch (m.t) {
      case 'reply':
        return rpc.settle(m);
      case 'admit':
        return rpc.reply(m.id, this.limits.admit(w.index, m.ask));
      case 'leave':
        return this.limits.leave(w.index, m.db, m.user);
      case 'slot':
        if (this.limits.requestSlot({ worker: w.index, id: m.id, ask: m.ask })) return rpc.reply(m.id, null);
        return this.watchWaiting();
      case 'unslot':
        return this.granted(this.limits.releaseSlot(w.index, m.key));
      case 'console':
        return void this.console(w, m.sql, m.admin).then((o) => rpc.reply(m.id, o));
      case 'shutdown':
        return this.stop(m.mode);
    }
  }

  private granted(requests: readonly SlotRequest[]): void {
    for (const r of requests) this.workers[r.worker - 1]?.rpc?.reply(r.id, null);
  }

  private onExit(w: Worker, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (w.child !== child) return;
    w.child = null;
    w.ready = false;
    w.rpc?.lose();
    this.granted(this.limits.workerGone(w.index));
    if (this.stopping || !this.up) {
      if (this.stopping && this.workers.every((x) => x.child === null)) this.finish();
      return;
    }
    if (Date.now() - w.startedAt >= RESTART_RESET_MS) w.failures = 0;
    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** w.failures);
    w.failures++;
    log().warn(
      { worker: w.index, pid: child.pid, code, signal, restartInMs: delay },
      `worker ${w.index} (pid ${child.pid}) exited with ${signal ?? `code ${code}`}; restarting it in ${delay / 1000} s`,
    );
    w.restart = setTimeout(() => {
      w.restart = null;
      if (!this.stopping) void this.spawn(w);
    }, delay);
  }

  // ---------------------------------------------------------------- the unix socket

  /** A client on the instance's unix socket: to the next worker that listens, unread. */
  private readonly handOver = (socket: net.Socket): void => {
    const ready = this.workers.filter((w) => w.ready && w.child?.connected === true);
    const w = ready[this.nextUnix++ % Math.max(1, ready.length)];
    if (w === undefined) return void socket.destroy();
    w.child!.send({ t: 'conn' } satisfies ToWorker, socket);
  };

  // ---------------------------------------------------------------- limits: idle servers elsewhere

  /** While server slots wait, ask the workers holding servers under the blocking limits to close
   * an idle one (the slot then goes to the waiting request). */
  private watchWaiting(): void {
    void this.evictForWaiting();
    this.evictTimer ??= setInterval(() => {
      if (this.limits.pending.length === 0) {
        clearInterval(this.evictTimer!);
        this.evictTimer = null;
        return;
      }
      void this.evictForWaiting();
    }, EVICT_EVERY_MS);
  }

  private async evictForWaiting(): Promise<void> {
    if (this.evicting) return;
    this.evicting = true;
    try {
      const asked = new Set<string>();
      for (const r of [...this.limits.pending]) {
        for (const c of this.limits.evictionCandidates(r)) {
          const key = `${c.worker}\0${c.by}\0${c.name}`;
          if (asked.has(key)) continue;
          asked.add(key);
          const rpc = this.workers[c.worker - 1]?.rpc;
          const minIdleMs = c.richer ? 0 : UNUSED_IDLE_MS;
          if (rpc !== null && rpc !== undefined && (await rpc.call<'evict'>((id) => ({ t: 'evict', id, by: c.by, name: c.name, minIdleMs }), false))) break;
        }
      }
    } finally {
      this.evicting = false;
    }
  }

  // ---------------------------------------------------------------- the console

  /** Ask every worker that listens; the answers in worker order. */
  private askAll<K extends 'run' | 'metrics'>(make: (w: Worker, id: number) => ToWorker, kind: K): Promise<Answers[K][]> {
    const lost = (kind === 'run' ? { reply: null } : { series: [], health: null }) as Answers[K];
    return Promise.all(this.workers.filter((w) => w.ready && w.rpc !== null).map((w) => w.rpc!.call<K>((id) => make(w, id), lost)));
  }

  private askMetrics(): Promise<Answers['metrics'][]> {
    return this.askAll((_w, id) => ({ t: 'metrics', id }), 'metrics');
  }

  /** A console command for the whole instance, asked through worker `from`. */
  private async console(from: Worker, sql: string, admin: boolean): Promise<ConsoleOutcome> {
    const word = /^\s*"?([a-z_]+)/i.exec(sql)?.[1]?.toLowerCase();
    const run = (_w: Worker, id: number): ToWorker => ({ t: 'run', id, sql, admin });
    // RELOAD is tried here first: every worker reloads, or (a bad file) only the one asked, which
    // then answers with the reason, changing nothing.
    if (word === 'reload' && admin && this.reloadProblem() !== null) {
      return from.rpc!.call<'run'>((id) => run(from, id), { reply: null });
    }
    const answers = await this.askAll(run, 'run');
    if (answers.length === 0) return { reply: null };
    const shows = answers.filter((o): o is Extract<ConsoleOutcome, { show: string }> => 'show' in o);
    if (shows.length === answers.length) return { show: shows[0]!.show, rs: mergeShow(shows[0]!.show, shows.map((o) => o.rs)) };
    const isError = (o: ConsoleOutcome): boolean => 'reply' in o && o.reply !== null && o.reply.some((b) => b[0] === 0x45);
    // KILL_CLIENT names one connection: the worker that has it answers for the instance.
    if (word === 'kill_client') return answers.find((o) => !isError(o)) ?? answers[0]!;
    return answers.find(isError) ?? answers[Math.max(0, this.workers.filter((w) => w.ready).indexOf(from))] ?? answers[0]!;
  }

  // ---------------------------------------------------------------- signals and stopping

  /** The config file as a reload would read it; the problem, or null (then cfg is the new one). */
  private reloadProblem(): string | null {
    if (this.cfg.configFile === null) return 'configuration came from the environment; nothing to reload';
    try {
      const cfg = loadConfig(this.cfg.configFile);
      buildTlsContexts(cfg, true);
      authRules(cfg);
      this.cfg = cfg;
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  }

  /** Pass `signal` to every worker. */
  private signalAll(signal: NodeJS.Signals): void {
    for (const w of this.workers) w.child?.kill(signal);
  }

  installSignals(): void {
    const stopOn = (signal: NodeJS.Signals, mode: ShutdownMode) => () => {
      log().info(`got ${signal}, passing it to the workers`);
      this.stop(this.stopping ? 'immediate' : mode, signal);
    };
    process.on('SIGTERM', stopOn('SIGTERM', 'wait_for_clients'));
    process.on('SIGINT', stopOn('SIGINT', 'wait_for_servers'));
    process.on('SIGQUIT', stopOn('SIGQUIT', 'immediate'));
    process.on('SIGHUP', () => {
      const problem = this.reloadProblem();
      if (problem !== null) return log().error({ reason: problem }, `got SIGHUP: reload failed, keeping old configuration: ${problem}`);
      log().info('got SIGHUP, the workers re-read the config');
      this.signalAll('SIGHUP');
    });
    for (const sig of ['SIGUSR1', 'SIGUSR2'] as const) {
      process.on(sig, () => {
        log().info(`got ${sig}, passing it to the workers`);
        this.signalAll(sig);
      });
    }
    process.on('SIGPIPE', () => undefined);
  }

  /** Stop the instance: every worker as `mode` says (a second stop: at once). */
  stop(mode: ShutdownMode, signal: NodeJS.Signals = SIGNAL_OF[mode]): void {
    const again = this.stopping;
    this.stopping = true;
    for (const w of this.workers) {
      if (w.restart !== null) clearTimeout(w.restart);
      w.restart = null;
    }
    this.signalAll(again ? 'SIGQUIT' : signal);
    if (this.workers.every((w) => w.child === null)) this.finish();
  }

  private finished = false;

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.evictTimer !== null) clearInterval(this.evictTimer);
    void Promise.all([this.listeners?.close(), this.metrics?.close()]).then(() => {
      this.cleanup();
      this.exitResolve();
    });
  }

  private cleanup(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
    flushLog();
  }
}
