// `npm start` with no configuration: the README's first command. It must start an embedded
// PostgreSQL with pgpool-ts in front, print a DATABASE_URL that psql and node-postgres can use at
// once, and stop both on Ctrl-C (SIGINT) with exit code 0.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import pg from 'pg';
import { freePort } from '../support/pooler.js';
import { psql } from '../support/run-cmd.js';
import { keepOutput } from '../support/test-logs.js';

const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/main.js');

test('npm start without a config runs the demo, serves its DATABASE_URL, and stops cleanly on SIGINT', async () => {
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
  try {
    const deadline = Date.now() + 60_000;
    while (!/DATABASE_URL=\S+/.test(out)) {
      assert.ok(Date.now() < deadline, `no DATABASE_URL within 60 s:\n${out}`);
      assert.equal(child.exitCode, null, `the demo exited early:\n${out}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const url = /DATABASE_URL=(\S+)/.exec(out)![1]!;
    assert.match(url, new RegExp(`:${port}/`), 'the URL points at the pooler');

    const r = await psql(url, "SELECT 'from psql'");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'from psql');

    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const res = await client.query<{ v: number }>('SELECT $1::int + 1 AS v', [41]);
      assert.equal(res.rows[0]?.v, 42);
    } finally {
      await client.end();
    }
  } finally {
    child.kill('SIGINT');
  }
  const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000))]);
  if (code === 'timeout') child.kill('SIGKILL');
  assert.equal(code, 0, `exit code after SIGINT:\n${out}`);
});
