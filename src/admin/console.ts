// The admin console: the virtual database `pgbouncer`. PgBouncer's grammar (one command word, an
// optional argument, an optional `;`, or `SET key = value`), its access rules and its messages,
// so scripts and tools written against PgBouncer read the same answers. SHOW result sets come
// from show.ts; the control commands act on the registry, the pools and the App.
//
// A command that waits (PAUSE, SUSPEND, WAIT_CLOSE) answers when its condition holds; commands of
// one session run in order, so a client that sends the next query early still reads its answers
// in order.
import { ADMIN_DB, type AdminConsole, type ClientConn } from '../client/client-conn.js';
import { OVERRIDE_FILE, settingRows } from '../config/load.js';
import { Errors, PoolerError } from '../errors.js';
import { flushLog, log } from '../log.js';
import { SqlState, TxStatus } from '../protocol/codes.js';
import * as encode from '../protocol/encode.js';
import type { Pool } from '../pool/pool.js';
import { FAKE_PARAMS, HELP_TEXT, SHOW, StatsPeriod, type ResultSet, type ShowHost } from './show.js';

export type ShutdownMode = 'immediate' | 'wait_for_servers' | 'wait_for_clients';

/** What the console reads and drives; implemented by App. */
export interface AdminHost extends ShowHost {
  /** A shutdown is under way (RESUME is refused, as in PgBouncer). */
  readonly stopping: boolean;
  /** In a multi-worker instance: runs a command in every worker and merges the answers
   * (cluster/); null in a single process. */
  readonly instance: { console(sql: string, admin: boolean): Promise<ConsoleOutcome> } | null;
  /** Re-read the config file, with `overrides` ([pgbouncer] key → value) over it; a bad result
   * changes nothing and says why. */
  reload(overrides?: ReadonlyMap<string, string>, opts?: { tlsOneAtATime?: boolean }): { ok: true; notice?: string } | { ok: false; error: string };
  shutdown(mode: ShutdownMode): Promise<void>;
}

/** Messages for the client, ReadyForQuery excluded; null = no answer (SHUTDOWN, the client left). */
type Reply = Buffer[] | null;

/** What one command gives in one process: a SHOW's result set is kept apart, so the workers'
 * answers can be merged (admin/merge.ts) before it is encoded. */
export type ConsoleOutcome = { readonly show: string; readonly rs: ResultSet } | { readonly reply: Reply };

function encodeOutcome(o: ConsoleOutcome): Reply {
  return 'rs' in o ? resultSet(o.rs) : o.reply;
}

type Rights = 'admin' | 'stats';

/** How often a waiting command looks again (PgBouncer's janitor runs every 1/3 s). */
const TICK_MS = 100;

// PgBouncer's admin.c grammar: WORD is a bare [0-9a-z_] run or a "quoted" name ("" for ").
const WORD = String.raw`("(?:[^"]|"")+"|[0-9a-z_]+)`;
const END = String.raw`\s*(?:;\s*)?$`;
const COMMAND_RX = new RegExp(String.raw`^\s*${WORD}(?:\s+${WORD})?${END}`, 'i');
// SET's value may also be 'quoted' ('' for '), or any unquoted run up to a blank or `;` (PgBouncer
// takes only a WORD there; addresses and fractions are common enough to allow them bare).
// Each run of blanks can be matched one way only (`\s*=\s*` or `\s+to\s+`, never `\s*` next to
// `\s+`): overlapping runs backtrack quadratically, and `SET a<40 000 blanks>x` blocked the pooler.
const SET_RX = new RegExp(String.raw`^\s*set\s+${WORD}(?:\s*=\s*|\s+to\s+)('(?:[^']|'')*'|"(?:[^"]|"")*"|[^\s;'"]+)${END}`, 'i');

function unquoteWord(w: string): string {
  return w.startsWith('"') ? w.slice(1, -1).replaceAll('""', '"') : w;
}

function unquoteValue(v: string): string {
  return v.startsWith("'") ? v.slice(1, -1).replaceAll("''", "'") : unquoteWord(v);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function ok(tag: string): Buffer[] {
  return [encode.commandComplete(tag)];
}

function err(message: string, code: string = SqlState.ProtocolViolation): Buffer[] {
  // PgBouncer logs every console error (admin_error) as well as sending it; the line is out first.
  log().error(message);
  flushLog();
  return [encode.errorResponse({ severity: 'ERROR', code, message })];
}

const adminNeeded = (): Buffer[] => err('admin access needed', SqlState.InsufficientPrivilege);

function resultSet(rs: ResultSet): Buffer[] {
  return [
    encode.rowDescription([...rs.columns]),
    ...rs.rows.map((row) => encode.dataRow(row.map((v) => (v === null ? null : String(v))))),
    encode.commandComplete('SHOW'),
  ];
}

export class Console implements AdminConsole {
  private readonly rights = new WeakMap<ClientConn, Rights>();
  /** Each session's last command, so the next one runs after it. */
  private readonly busy = new WeakMap<ClientConn, Promise<void>>();
  private readonly period: StatsPeriod;
  /** Values set with SET, re-applied over the file by each later SET; a RELOAD (or SIGHUP)
   * drops them: the file is the truth again. `setConfig` tells whether one happened since. */
  private overrides = new Map<string, string>();
  private setConfig: unknown = null;
  /** Sockets SUSPEND stopped reading (and only those: others were paused for backpressure). */
  /** Client and server connections SUSPEND stopped reading. */
  private readonly suspended = new Set<{ resumeReading(): void }>();

  constructor(private readonly host: AdminHost) {
    this.period = new StatsPeriod(host);
  }

  /** PgBouncer's rule: admin_users and stats_users may log in; with auth_type=any anyone may,
   * with stats rights; user pgbouncer from the pooler's own OS user (peer credentials on the unix
   * socket) has admin rights. Everyone else is refused at login. */
  login(client: ClientConn): PoolerError | null {
    const { adminUsers, statsUsers, authType } = this.host.cfg;
    if (client.ownUser || adminUsers.includes(client.user)) this.rights.set(client, 'admin');
    else if (statsUsers.includes(client.user) || authType === 'any') this.rights.set(client, 'stats');
    else return Errors.authRejected('not allowed');
    return null;
  }

  query(client: ClientConn, sql: string): void {
    const stats = this.host.consoleStats;
    stats.queries++;
    stats.xacts++;
    const previous = this.busy.get(client) ?? Promise.resolve();
    const next = previous
      .then(() => this.execute(client, sql))
      .catch((e: Error): Reply => {
        log().error(`pooler error: admin console: ${e.stack ?? e.message}`);
        return [encode.errorResponse({ severity: 'ERROR', code: SqlState.InternalError, message: e.message })];
      })
      .then((reply) => {
        if (reply === null || client.phase === 'closed') return;
        client.send(Buffer.concat([...reply, encode.readyForQuery(TxStatus.Idle)]));
      });
    this.busy.set(client, next);
  }

  settled(client: ClientConn): Promise<void> {
    return this.busy.get(client) ?? Promise.resolve();
  }

  // ---------------------------------------------------------------- parsing and dispatch

  private execute(client: ClientConn, sql: string): Reply | Promise<Reply> {
    const admin = this.rights.get(client) === 'admin';
    const instance = this.host.instance;
    if (instance !== null && instanceWide(sql, admin)) return instance.console(sql, admin).then(encodeOutcome);
    const o = this.run(client, sql, admin);
    return o instanceof Promise ? o.then(encodeOutcome) : encodeOutcome(o);
  }

  /**
   * A command's outcome in this process. `client` is null when another worker of the instance
   * asked (the command acts here too): then nothing waits on a session.
   */
  run(client: ClientConn | null, sql: string, admin: boolean): ConsoleOutcome | Promise<ConsoleOutcome> {
    const reply = (r: Reply | Promise<Reply>): ConsoleOutcome | Promise<ConsoleOutcome> =>
      r instanceof Promise ? r.then((x) => ({ reply: x })) : { reply: r };
    if (sql.trim() === '' || sql.trim() === ';') return { reply: [encode.emptyQueryResponse] };
    const cmd = COMMAND_RX.exec(sql);
    if (cmd !== null) {
      const name = unquoteWord(cmd[1]!).toLowerCase();
      const arg = cmd[2] === undefined ? '' : unquoteWord(cmd[2]);
      if (name === 'show' || name === 'select') return this.show(arg, admin, sql);
      if (!Object.hasOwn(CONTROL, name)) return { reply: syntaxError(sql) };
      if (!admin) return { reply: adminNeeded() };
      return reply(CONTROL[name]!.call(this, client, arg, sql));
    }
    const set = SET_RX.exec(sql);
    if (set !== null) return { reply: this.set(unquoteWord(set[1]!), unquoteValue(set[2]!), admin) };
    return { reply: syntaxError(sql) };
  }

  private show(arg: string, admin: boolean, sql: string): ConsoleOutcome {
    const name = arg.toLowerCase();
    const fake = FAKE_PARAMS.get(name);
    if (fake !== undefined) return { show: name, rs: { columns: [{ name, typeOid: 25 }], rows: [[fake]] } };
    if (name === 'help') {
      return { reply: [encode.noticeResponse({ severity: 'NOTICE', code: '00000', message: 'Console usage', detail: HELP_TEXT }), encode.commandComplete('SHOW')] };
    }
    if (name === 'fds') {
      if (!admin) return { reply: adminNeeded() };
      return { reply: err('SHOW FDS is not supported: pgpool-ts has no online restart (-R); use SHUTDOWN WAIT_FOR_CLIENTS', SqlState.FeatureNotSupported) };
    }
    if (!Object.hasOwn(SHOW, name)) return { reply: syntaxError(sql) };
    return { show: name, rs: SHOW[name]!(this.host, this.period) };
  }

  // ---------------------------------------------------------------- helpers for the commands

  private get registry(): AdminHost['registry'] {
    return this.host.registry;
  }

  /** Pools of one database (the name clients use), or all of them. */
  private poolsOf(db: string | null): Pool[] {
    return [...this.registry.pools.values()].filter((p) => db === null || p.dbName === db);
  }

  /** A database a command may act on: known (a [databases] entry, the `*` fallback, or a pool's)
   * and not the console's own. */
  private dbProblem(db: string, verb: string): Reply {
    if (db === ADMIN_DB) return err(`cannot ${verb} admin db: ${db}`);
    const cfg = this.host.cfg;
    if (cfg.databases.has(db) || cfg.databases.has('*') || this.poolsOf(db).length > 0) return null;
    return err(`no such database: ${db}`, SqlState.InvalidCatalogName);
  }

  /** Poll `done` until it holds (true), or the asking client leaves (false). */
  private async waitUntil(client: ClientConn | null, done: () => boolean): Promise<boolean> {
    while (!done()) {
      if (client !== null && client.phase === 'closed') return false;
      await sleep(TICK_MS);
    }
    return true;
  }

  /**
   * The pause loop (PgBouncer's janitor in pause mode): close every server of the paused pools as
   * soon as it is released, until none is left (true), or the pause is lifted or the asking
   * client leaves first (false).
   */
  private drain(db: string | null, client: ClientConn | null): Promise<boolean> {
    let lifted = false;
    return this.waitUntil(client, () => {
      const pools = this.poolsOf(db);
      lifted = db === null ? !this.registry.pausedAll : !this.registry.paused.has(db);
      if (lifted) return true;
      let left = 0;
      for (const p of pools) {
        p.closeServers('pause mode', false);
        left += p.serverCount;
      }
      return left === 0;
    }).then((done) => done && !lifted);
  }

  // ---------------------------------------------------------------- PAUSE, RESUME (and signals)

  /** SIGUSR1: PAUSE without waiting for an answer. */
  pauseAll(): void {
    const reg = this.registry;
    if (reg.pausedAll || reg.suspended) return;
    reg.pausedAll = true;
    void this.drain(null, null);
  }

  /** SIGUSR2: RESUME; ignored during a shutdown (PgBouncer 1.23+). */
  resumeAll(): void {
    if (this.host.stopping) return;
    this.resumeEverything();
  }

  private resumeEverything(): void {
    const reg = this.registry;
    reg.pausedAll = false;
    reg.paused.clear();
    reg.suspended = false;
    for (const conn of this.suspended) conn.resumeReading();
    this.suspended.clear();
    for (const p of reg.pools.values()) p.pump();
  }

  async pause(client: ClientConn | null, db: string): Promise<Reply> {
    const reg = this.registry;
    if (reg.pausedAll || reg.suspended) return err('already suspended/paused', SqlState.ObjectNotInState);
    if (db === '') {
      log().info('PAUSE command issued');
      reg.pausedAll = true;
    } else {
      const problem = this.dbProblem(db, 'pause');
      if (problem !== null) return problem;
      log().info(`PAUSE '${db}' command issued`);
      reg.paused.add(db);
    }
    await this.drain(db === '' ? null : db, client);
    return ok('PAUSE');
  }

  resume(_client: ClientConn | null, db: string): Reply {
    const reg = this.registry;
    if (db === '') {
      log().info('RESUME command issued');
      if (this.host.stopping) return err('pooler is shutting down');
      if (!reg.pausedAll && !reg.suspended && reg.paused.size === 0) {
        return err('pooler is not paused/suspended', SqlState.ObjectNotInState);
      }
      this.resumeEverything();
      return ok('RESUME');
    }
    log().info(`RESUME '${db}' command issued`);
    const problem = this.dbProblem(db, 'resume');
    if (problem !== null) return problem;
    if (!reg.paused.has(db)) return err(`database ${db} is not paused`, SqlState.ObjectNotInState);
    reg.paused.delete(db);
    for (const p of this.poolsOf(db)) p.pump();
    return ok('RESUME');
  }

  /**
   * SUSPEND: stop reading every client and server socket, wait (up to suspend_timeout) until what
   * was already written has left, then answer. PgBouncer does this before an online restart,
   * which pgpool-ts does not offer; it is kept for scripts that SUSPEND/RESUME around other work.
   * Clients whose bytes did not leave in time are disconnected, as in PgBouncer.
   */
  async suspend(client: ClientConn | null, arg: string, sql: string): Promise<Reply> {
    if (arg !== '') return syntaxError(sql);
    const reg = this.registry;
    if (reg.pausedAll || reg.suspended) return err('already suspended/paused', SqlState.ObjectNotInState);
    if (reg.paused.size > 0) return err('cannot suspend with paused databases', SqlState.ObjectNotInState);
    log().info('SUSPEND command issued');
    reg.suspended = true;
    const held: ClientConn[] = [];
    for (const c of this.host.clients) {
      if (c.admin || c.pool === null || c.phase === 'closed') continue;
      held.push(c);
      for (const conn of [c, c.server]) {
        if (conn === null) continue;
        conn.pauseReading();
        this.suspended.add(conn);
      }
    }
    const flushed = (c: ClientConn): boolean => c.unsentBytes === 0 && (c.server?.unsentBytes ?? 0) === 0;
    const deadline = Date.now() + this.host.cfg.suspendTimeout * 1000;
    await this.waitUntil(client, () => held.every(flushed) || Date.now() >= deadline);
    for (const c of held) if (!flushed(c)) c.fail(new PoolerError(SqlState.ProtocolViolation, 'suspend_timeout'));
    return ok('SUSPEND');
  }

  // ---------------------------------------------------------------- the other control commands

  disable(_client: ClientConn | null, db: string): Reply {
    if (db === '') return err('a database is required');
    log().info(`DISABLE '${db}' command issued`);
    const problem = this.dbProblem(db, 'disable');
    if (problem !== null) return problem;
    this.registry.disabled.add(db);
    return ok('DISABLE');
  }

  enable(_client: ClientConn | null, db: string): Reply {
    if (db === '') return err('a database is required');
    log().info(`ENABLE '${db}' command issued`);
    const problem = this.dbProblem(db, 'enable');
    if (problem !== null) return problem;
    this.registry.disabled.delete(db);
    return ok('ENABLE');
  }

  /** RECONNECT [db]: idle servers are closed now, linked ones when their client releases them. */
  reconnect(_client: ClientConn | null, db: string): Reply {
    if (db !== '') {
      const problem = this.dbProblem(db, 'reconnect');
      if (problem !== null) return problem;
    }
    log().info(db === '' ? 'RECONNECT command issued' : `RECONNECT '${db}' command issued`);
    for (const p of this.poolsOf(db === '' ? null : db)) p.reconnect('database configuration changed');
    return ok('RECONNECT');
  }

  /** KILL [db]: drop the clients and servers of the database(s) now (the console's own excepted);
   * they stay paused, so new clients wait for RESUME. */
  kill(_client: ClientConn | null, db: string): Reply {
    const reg = this.registry;
    if (reg.pausedAll || reg.suspended) return err('already suspended/paused', SqlState.ObjectNotInState);
    let dbs: Set<string>;
    if (db === '') {
      log().info('KILL command issued');
      dbs = new Set([...this.host.cfg.databases.keys()].filter((n) => n !== '*'));
      for (const p of reg.pools.values()) dbs.add(p.dbName);
    } else {
      const problem = this.dbProblem(db, 'kill');
      if (problem !== null) return problem;
      log().info(`KILL '${db}' command issued`);
      dbs = new Set([db]);
    }
    for (const name of dbs) reg.paused.add(name);
    const killed = new PoolerError(SqlState.AdminShutdown, 'database removed');
    for (const c of [...this.host.clients]) if (c.pool !== null && dbs.has(c.pool.dbName)) c.fail(killed);
    for (const p of reg.pools.values()) if (dbs.has(p.dbName)) p.closeServers('database removed', true);
    return ok('KILL');
  }

  /** KILL_CLIENT id (the id column of SHOW CLIENTS). Its server goes back to the pool if it was
   * between transactions, and is closed otherwise. */
  killClient(client: ClientConn | null, arg: string): Reply {
    if (!/^\d+$/.test(arg)) return err('invalid client pointer supplied');
    const id = Number(arg);
    const target = [...this.host.clients].find((c) => c.id === id && c.phase !== 'closed' && (c.pool !== null || c.admin));
    if (target === undefined) return err('client not found');
    log().info(`KILL_CLIENT '${id}' command issued`);
    target.fail(new PoolerError(SqlState.AdminShutdown, 'admin forced disconnect'));
    return target === client ? null : ok('KILL_CLIENT');
  }

  reload(_client: ClientConn | null, arg: string, sql: string): Reply {
    if (arg !== '') return syntaxError(sql);
    log().info('RELOAD command issued');
    const r = this.host.reload();
    if (!r.ok) return err(`RELOAD failed, keeping the old configuration: ${r.error}`, SqlState.ConfigFileError);
    return ok('RELOAD');
  }

  /** WAIT_CLOSE [db]: answer once no server (of db) is still marked close_needed (RECONNECT, or a
   * RELOAD that changed its database). */
  async waitClose(client: ClientConn | null, db: string): Promise<Reply> {
    if (db !== '') {
      const problem = this.dbProblem(db, 'wait in');
      if (problem !== null) return problem;
    }
    log().info(db === '' ? 'WAIT_CLOSE command issued' : `WAIT_CLOSE '${db}' command issued`);
    const pools = (): Pool[] => this.poolsOf(db === '' ? null : db);
    const marked = (p: Pool): boolean =>
      [p.svActive, p.svIdle, p.svUsed, p.svTested, p.svLogin].some((list) => [...list].some((s) => s.closeNeeded));
    const done = await this.waitUntil(client, () => !pools().some(marked));
    return done ? ok('WAIT_CLOSE') : null;
  }

  /** SHUTDOWN exits at once (the asking session gets no answer, as in PgBouncer); the two waiting
   * modes answer first and then stop listening. */
  shutdown(_client: ClientConn | null, arg: string, sql: string): Reply {
    const mode = arg === '' ? 'immediate' : arg.toLowerCase();
    if (mode !== 'immediate' && mode !== 'wait_for_servers' && mode !== 'wait_for_clients') return syntaxError(sql);
    log().info(mode === 'immediate' ? 'SHUTDOWN command issued' : `SHUTDOWN ${mode.toUpperCase()} command issued`);
    if (mode === 'immediate') {
      void this.host.shutdown('immediate');
      return null;
    }
    // After this turn, so the answer is written before the listeners close.
    setImmediate(() => void this.host.shutdown(mode));
    return ok('SHUTDOWN');
  }

  /**
   * SET key = value: reloadable settings only. The new value is applied by building a whole new
   * Config (the file plus every SET so far), so it is validated exactly like the file and a bad
   * value changes nothing; TLS settings that only work together are taken one at a time, with a
   * notice while the TLS in use stays the old one (PgBouncer's behaviour). Driver-compatibility
   * settings (client_encoding, …) are accepted and ignored, by anyone, as PgBouncer does.
   */
  private set(key: string, value: string, admin: boolean): Reply {
    if (FAKE_PARAMS.has(key.toLowerCase())) {
      return [encode.noticeResponse({ severity: 'NOTICE', code: '00000', message: 'SET ignored' }), encode.commandComplete('SET')];
    }
    if (!admin) return adminNeeded();
    const name = key.toLowerCase();
    const row = settingRows(this.host.cfg).find((r) => r.key === name);
    if (row === undefined) return err(`SET failed: unknown setting '${key}'`, SqlState.InvalidParameterValue);
    if (!row.changeable) return err(`SET failed: ${name} cannot be changed without a restart`, SqlState.InvalidParameterValue);
    if (this.host.cfg.configFile === null) {
      return err('SET failed: the configuration came from the environment, so there is no file to apply it over', SqlState.InvalidParameterValue);
    }
    if (this.host.cfg !== this.setConfig) this.overrides.clear();
    const next = new Map(this.overrides).set(name, value);
    const r = this.host.reload(next, { tlsOneAtATime: true });
    if (!r.ok) {
      const why = r.error.split('\n').map((l) => (l.startsWith(`${OVERRIDE_FILE}: `) ? l.slice(OVERRIDE_FILE.length + 2) : l));
      return err(`SET failed: ${why.join('; ')}`, SqlState.InvalidParameterValue);
    }
    this.overrides = next;
    this.setConfig = this.host.cfg;
    const notice = r.notice === undefined ? [] : [encode.noticeResponse({ severity: 'NOTICE', code: '00000', message: r.notice })];
    return [...notice, ...ok(`SET ${name}=${value}`)];
  }
}

function syntaxError(sql: string): Buffer[] {
  return err(`invalid command '${sql.trim()}', use SHOW HELP;`, SqlState.SyntaxError);
}

type Control = (this: Console, client: ClientConn | null, arg: string, sql: string) => Reply | Promise<Reply>;

/**
 * Commands that act on (or show) the whole of a multi-worker instance: SHOWs of its state, the
 * control commands (SHUTDOWN excepted: the host's shutdown() stops the instance) and SET. The
 * rest (SHOW HELP, FDS, the fake parameters, refusals) is answered by the worker asked.
 */
function instanceWide(sql: string, admin: boolean): boolean {
  const cmd = COMMAND_RX.exec(sql);
  if (cmd !== null) {
    const name = unquoteWord(cmd[1]!).toLowerCase();
    if (name === 'show' || name === 'select') return cmd[2] !== undefined && Object.hasOwn(SHOW, unquoteWord(cmd[2]).toLowerCase());
    return admin && Object.hasOwn(CONTROL, name) && name !== 'shutdown';
  }
  const set = SET_RX.exec(sql);
  return set !== null && admin && !FAKE_PARAMS.has(unquoteWord(set[1]!).toLowerCase());
}

/** Control commands, admin_users only (PgBouncer's cmd_list). */
const CONTROL: Readonly<Record<string, Control>> = {
  disable: Console.prototype.disable,
  enable: Console.prototype.enable,
  kill: Console.prototype.kill,
  kill_client: Console.prototype.killClient,
  pause: Console.prototype.pause,
  reconnect: Console.prototype.reconnect,
  reload: Console.prototype.reload,
  resume: Console.prototype.resume,
  shutdown: Console.prototype.shutdown,
  suspend: Console.prototype.suspend,
  wait_close: Console.prototype.waitClose,
};
