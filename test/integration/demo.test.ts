// `npm start` with no configuration: the README's first command. It must start an embedded
// PostgreSQL with TLS and pgpool-ts in front, TLS on both sides (client_tls_sslmode = require,
// server_tls_sslmode = verify-full against a CA it makes), print a DATABASE_URL with
// sslmode=require, its verify-full variant with the CA's path, and an admin console command that
// work as printed with psql and node-postgres, and stop all of it on Ctrl-C (SIGINT) with exit 0.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import pg from 'pg';
import { freePort } from '../support/pooler.js';
import { psql, runCommand } from '../support/run-cmd.js';
import { keepOutput } from '../support/test-logs.js';

const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/main.js');

async function nodePostgres(url: string, sql: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const r = await client.query<{ v: string }>(sql);
    return r.rows[0]!.v;
  } finally {
    await client.end();
  }
}

test('npm start without a config runs the TLS demo, serves its URLs and console, and stops cleanly on SIGINT', async () => {
  const port = await freePort();
  // An empty environment for the config: no ini, no DATABASE_URL, so the demo starts.
  const env: NodeJS.ProcessEnv = { ...process.env, PGPOOL_DEMO_PORT: String(port) };
  delete env.DATABASE_URL;
  delete env.DB_HOST;
  const child = spawn(process.execPath, [main], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  keepOutput(child, 'demo');
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let caFile = '';
  try {
    const deadline = Date.now() + 60_000;
    while (!/Press Ctrl-C/.test(out)) {
      assert.ok(Date.now() < deadline, `the demo did not start within 60 s:\n${out}`);
      assert.equal(child.exitCode, null, `the demo exited early:\n${out}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const urls = [...out.matchAll(/DATABASE_URL=(\S+)/g)].map((m) => m[1]!);
    assert.equal(urls.length, 2, out);
    const [url, verified] = urls as [string, string];
    assert.match(url, new RegExp(`:${port}/postgres\\?sslmode=require$`), 'the first URL asks for TLS');
    const ca = /sslmode=verify-full&sslrootcert=(\S+)$/.exec(verified);
    assert.ok(ca, `the second URL verifies the pooler with the demo's CA: ${verified}`);
    caFile = ca[1]!;
    assert.ok(fs.existsSync(caFile), 'the CA file it names exists');

    // psql with each URL as printed; the pooler refuses plain text.
    for (const u of [url, verified]) {
      const r = await psql(u, "SELECT 'from psql'");
      assert.equal(r.code, 0, `${u}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), 'from psql');
    }
    const plain = await psql(url.replace('sslmode=require', 'sslmode=disable'), 'SELECT 1');
    assert.notEqual(plain.code, 0, 'a client without TLS is refused');
    assert.match(plain.stderr, /SSL required/);

    // node-postgres: the verify-full URL as printed; the first with uselibpqcompat=true, as the
    // demo says (node-postgres reads sslmode=require as verify-full against the system's CAs).
    assert.equal(await nodePostgres(verified, "SELECT 'node-postgres' AS v"), 'node-postgres');
    assert.equal(await nodePostgres(`${url}&uselibpqcompat=true`, 'SELECT ssl::text AS v FROM pg_stat_ssl WHERE pid = pg_backend_pid()'), 'true');

    // The console command as printed: pgpool-ts's servers use TLS towards PostgreSQL.
    const consoleCommand = /^ {2}(psql "[^"]*\/pgbouncer\?[^"]*")$/m.exec(out)?.[1];
    assert.ok(consoleCommand, `no console command in:\n${out}`);
    const servers = await runCommand('sh', ['-c', `${consoleCommand} -X -A -F '|' -c 'SHOW SERVERS'`], { timeoutMs: 20_000 });
    assert.equal(servers.code, 0, servers.stderr);
    const [header, ...rows] = servers.stdout.trim().split('\n');
    const tlsColumn = header!.split('|').indexOf('tls');
    assert.ok(rows.length > 1, servers.stdout);
    for (const row of rows.filter((r) => r.startsWith('S|'))) assert.match(row.split('|')[tlsColumn] ?? '', /^TLSv1\.[23]\//, row);
  } finally {
    child.kill('SIGINT');
  }
  const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000))]);
  if (code === 'timeout') child.kill('SIGKILL');
  assert.equal(code, 0, `exit code after SIGINT:\n${out}`);
  assert.equal(fs.existsSync(caFile), false, 'the throwaway CA is gone with the demo');
});
