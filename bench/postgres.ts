// The PostgreSQL every target ends at: a throwaway cluster in the bench's temp dir, tuned for a
// benchmark rather than for durability, with one SCRAM user `bench` owning a pgbench database.
//
// initdb and postgres refuse to run as root; under uid 0 they run as the `postgres` OS user. They
// are spawned with that uid directly (not through runuser) so that the PID we hold is the
// postmaster's own, which we signal for a fast shutdown.

import fs from 'node:fs';
import path from 'node:path';
import { makePki, type KeyType } from '../test/support/pki.js';
import { Proc, freePort, runCmd, sleep, type CmdResult } from './procs.js';

export const BENCH_USER = 'bench';
export const BENCH_PASSWORD = 'bench-scram-pw';
export const BENCH_DB = 'bench';
export const PGBENCH_SCALE = 10;

/** Settings from the benchmark brief; max_connections leaves room for 1000 direct clients. */
export const SERVER_CONF: Record<string, string> = {
  max_connections: '1200',
  shared_buffers: '128MB',
  fsync: 'off',
  synchronous_commit: 'off',
  password_encryption: 'scram-sha-256',
};

export interface PgBinaries {
  initdb: string;
  postgres: string;
  psql: string;
  pgbench: string;
}

/** PGPOOL_BENCH_PG_BIN (a PostgreSQL bin dir), else the system's PostgreSQL 15. psql and pgbench
 * come from that dir when it has them, else from PATH. */
export function pgBinaries(): PgBinaries {
  const dir = process.env.PGPOOL_BENCH_PG_BIN || '/usr/lib/postgresql/15/bin';
  const inDir = (name: string) => (fs.existsSync(path.join(dir, name)) ? path.join(dir, name) : name);
  return { initdb: path.join(dir, 'initdb'), postgres: path.join(dir, 'postgres'), psql: inDir('psql'), pgbench: inDir('pgbench') };
}

/** The files of the one server certificate PostgreSQL and both poolers present (SANs localhost,
 * 127.0.0.1), and the CA bundle that verifies it. */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
  keyType: KeyType;
}

export interface OsUser {
  uid: number;
  gid: number;
}

/** The uid/gid to run PostgreSQL and PgBouncer as: `postgres` under root, else ourselves. */
export function serviceUser(): OsUser | null {
  if (process.getuid?.() !== 0) return null;
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) throw new Error("running as root needs a 'postgres' OS user (useradd --system postgres)");
  return { uid: Number(uid), gid: Number(gid) };
}

/** libpq settings from the caller's shell must not leak into any child. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, LC_ALL: 'C', ...extra };
}

function check(what: string, r: CmdResult): CmdResult {
  if (r.code !== 0) throw new Error(`${what} failed (code ${r.code}${r.timedOut ? ', timed out' : ''}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

export class Cluster {
  private proc: Proc | null = null;
  private tlsFiles: TlsFiles | null = null;

  private constructor(
    readonly bins: PgBinaries,
    readonly dir: string,
    readonly port: number,
    private readonly user: OsUser | null,
  ) {}

  get dataDir(): string {
    return path.join(this.dir, 'pgdata');
  }
  get socketDir(): string {
    return path.join(this.dir, 'pgsock');
  }
  get logFile(): string {
    return path.join(this.dir, 'postgres.log');
  }
  get tls(): TlsFiles {
    if (this.tlsFiles === null) throw new Error('cluster not set up');
    return this.tlsFiles;
  }
  get pid(): number | null {
    return this.proc?.pid ?? null;
  }

  /** A cluster-to-be in `dir` on a free port; setup() makes it. Split in two so that the caller
   * holds it (and so can stop it) before anything is started. */
  static async allocate(dir: string): Promise<Cluster> {
    return new Cluster(pgBinaries(), dir, await freePort(), serviceUser());
  }

  /** Certificates, initdb, configure, start, create the bench user and database, pgbench -i. */
  async setup(log: (msg: string) => void, keyType: KeyType): Promise<void> {
    log(`certificates (${keyType === 'ec' ? 'ECDSA P-256' : 'RSA 2048'})`);
    const pki = await makePki(path.join(this.dir, 'pki'), { keyType });
    // PostgreSQL wants its key owned by its own user and private; PgBouncer runs as that user too.
    if (this.user !== null) fs.chownSync(pki.server.key, this.user.uid, this.user.gid);
    fs.chmodSync(path.join(this.dir, 'pki'), 0o755);
    this.tlsFiles = { cert: pki.server.chain, key: pki.server.key, ca: pki.caBundle, keyType };
    for (const d of [this.dataDir, this.socketDir]) {
      fs.mkdirSync(d, { mode: 0o700 });
      if (this.user !== null) fs.chownSync(d, this.user.uid, this.user.gid);
    }
    log(`initdb (${this.bins.initdb})`);
    check(
      'initdb',
      await runCmd(this.bins.initdb, ['-D', this.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], {
        env: cleanEnv(),
        uid: this.user?.uid,
        gid: this.user?.gid,
        timeoutMs: 120_000,
      }),
    );
    const conf = {
      ...SERVER_CONF,
      listen_addresses: '127.0.0.1',
      port: String(this.port),
      unix_socket_directories: this.socketDir,
      ssl: 'on',
      ssl_cert_file: this.tlsFiles.cert,
      ssl_key_file: this.tlsFiles.key,
    };
    fs.appendFileSync(path.join(this.dataDir, 'postgresql.conf'), Object.entries(conf).map(([k, v]) => `${k} = '${v}'\n`).join(''));
    // Setup goes over the private socket as the superuser; every benchmark connection is TCP as
    // `bench` with a SCRAM password, as a pooler's clients and server connections would be.
    fs.writeFileSync(
      path.join(this.dataDir, 'pg_hba.conf'),
      `local all postgres trust\nhost all ${BENCH_USER} 127.0.0.1/32 scram-sha-256\n`,
    );
    await this.start();
    await this.psql(`CREATE ROLE ${BENCH_USER} LOGIN PASSWORD '${BENCH_PASSWORD}'`);
    await this.psql(`CREATE DATABASE ${BENCH_DB} OWNER ${BENCH_USER}`);
    log(`pgbench -i -s ${PGBENCH_SCALE}`);
    check(
      'pgbench -i',
      await runCmd(this.bins.pgbench, ['-i', '-q', '-s', String(PGBENCH_SCALE)], { env: this.benchEnv(this.port, false), timeoutMs: 600_000 }),
    );
  }

  /** libpq environment for the bench user against 127.0.0.1:port (PostgreSQL or a proxy).
   * sslmode require or disable, never prefer: no pointless SSLRequest round trip on every
   * (re)connection of a plain run. gssencmode off for the same reason. */
  benchEnv(port: number, tls: boolean): NodeJS.ProcessEnv {
    return cleanEnv({
      PGHOST: '127.0.0.1',
      PGPORT: String(port),
      PGUSER: BENCH_USER,
      PGPASSWORD: BENCH_PASSWORD,
      PGDATABASE: BENCH_DB,
      PGSSLMODE: tls ? 'require' : 'disable',
      PGGSSENCMODE: 'disable',
    });
  }

  /** The SCRAM verifier PostgreSQL stores for the bench user (the poolers' userlist entry). */
  async benchSecret(): Promise<string> {
    const secret = await this.psql(`SELECT rolpassword FROM pg_authid WHERE rolname = '${BENCH_USER}'`);
    if (!secret.startsWith('SCRAM-SHA-256$')) throw new Error(`unexpected stored secret for ${BENCH_USER}: ${secret.slice(0, 20)}…`);
    return secret;
  }

  async start(): Promise<void> {
    this.proc = new Proc('postgres', this.bins.postgres, ['-D', this.dataDir], {
      logFile: this.logFile,
      env: cleanEnv(),
      uid: this.user?.uid,
      gid: this.user?.gid,
      // An immediate shutdown is the only one that needs no waiting.
      lastResortSignal: 'SIGQUIT',
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (!this.proc.alive()) throw new Error(`postgres exited during startup:\n${this.proc.logTail(40)}`);
      const r = await runCmd(this.bins.psql, this.psqlArgs('SELECT 1'), { env: cleanEnv(), timeoutMs: 10_000 });
      if (r.code === 0) return;
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 60 s:\n${this.proc.logTail(40)}`);
      await sleep(100);
    }
  }

  private psqlArgs(sql: string): string[] {
    return ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', this.socketDir, '-p', String(this.port), '-U', 'postgres', '-d', 'postgres', '-c', sql];
  }

  /** One superuser statement over the unix socket; returns its unaligned output. */
  async psql(sql: string): Promise<string> {
    return check(`psql ${sql}`, await runCmd(this.bins.psql, this.psqlArgs(sql), { env: cleanEnv(), timeoutMs: 60_000 })).stdout.trim();
  }

  /** Fast shutdown (SIGINT): sessions are terminated, no waiting for clients. */
  async stop(): Promise<void> {
    await this.proc?.stop('SIGINT', 30_000);
    this.proc = null;
  }
}
