// The `options` startup parameter (PgBouncer 1.20+): `-c name=value` and `--name=value` for a
// tracked parameter (the five fixed ones and track_extra_parameters) go into the client's variable
// cache exactly as the same parameter in the startup packet would, so the client keeps it on every
// server it is given. Anything else in `options` refuses the login with PgBouncer's message, unless
// ignore_startup_parameters lists the name or `options` itself. Real clients send it: psql through
// PGOPTIONS, node-postgres through `options`, psycopg through its conninfo.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, endAll, type PgError } from '../support/pg-client.js';
import { psql, runCommand } from '../support/run-cmd.js';
import { USERS } from '../support/pg-cluster.js';
import { logSince, usePooler, useSetup } from '../support/suite.js';
import type { IniSections } from '../support/pooler.js';
import { psycopgPython } from '../support/python.js';

const USER = USERS.trust.name;
const setup = useSetup({ cluster: { name: 'options' }, dumpLogs: { clusterLines: 50 } });
const { c } = setup;

function ini(extra: Record<string, string>): () => IniSections {
  return () => ({
    // pool_size 1: every client of the database shares one backend, so a value missing from the
    // variable cache shows up as another client's.
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', verbose: '1', ...extra },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
  });
}

function connect(port: number, options: string): Promise<pg.Client> {
  return connectClient({ host: '127.0.0.1', port, user: USER, database: 'p0', options, connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
}

async function value(client: pg.Client, setting: string): Promise<string> {
  const r = await client.query<{ v: string }>(`SELECT current_setting('${setting}') AS v`);
  return r.rows[0]!.v;
}

describe('options with tracked parameters', () => {
  const { p } = usePooler({ ini: ini({ track_extra_parameters: 'IntervalStyle, search_path' }), dumpLogs: { clusters: () => [setup.cluster] } });

  it('takes -c and --, blanks and backslash escapes as PgBouncer does', async () => {
    const cases: [string, string, string][] = [
      ['  -c    datestyle=German,\\ YMD', 'DateStyle', 'German, YMD'],
      ['-c timezone=Portugal  -c    datestyle=German,\\ YMD', 'TimeZone', 'Portugal'],
      ['-ctimezone=Portugal  -cdatestyle=German,\\ YMD', 'DateStyle', 'German, YMD'],
      ['--timezone=Portugal  --datestyle=German,\\ YMD', 'TimeZone', 'Portugal'],
      ['-c t\\imezone=\\P\\o\\r\\t\\ugal  -c    dat\\estyle\\=\\Ge\\rman,\\ YMD', 'TimeZone', 'Portugal'],
      ['-c IntervalStyle=sql_standard', 'IntervalStyle', 'sql_standard'],
    ];
    for (const [options, setting, expected] of cases) {
      const client = await connect(p().port, options);
      try {
        assert.equal(await value(client, setting), expected, `options '${options}'`);
      } finally {
        await client.end();
      }
    }
  });

  it('keeps each client\'s options values while the two share one backend in transaction mode', async () => {
    const a = await connect(p().port, '-c TimeZone=Portugal -c search_path=a_schema,public');
    const b = await connect(p().port, '--timezone=Asia/Tokyo');
    try {
      for (let i = 0; i < 20; i++) {
        assert.equal(await value(a, 'TimeZone'), 'Portugal');
        assert.equal(await value(b, 'TimeZone'), 'Asia/Tokyo');
        assert.equal(await value(a, 'search_path'), 'a_schema, public');
        assert.equal(await value(b, 'search_path'), '"$user", public');
      }
      const pids = await Promise.all([a, b].map(async (cl) => (await cl.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid));
      assert.equal(pids[0], pids[1], 'pool_size=1: both clients should have run on one backend');
    } finally {
      await endAll([a, b]);
    }
  });

  it('sends the SET once: after it, the server\'s canonical value is the cached one', async () => {
    const from = p().logs().length;
    const client = await connect(p().port, '-c DateStyle=ISO');
    try {
      await client.query('SELECT 1');
      await client.query('SELECT 1');
      await logSince(p(), from, /varcache_set_canonical: setting DateStyle to its canonical version ISO -> ISO, MDY/);
      const sets = p().logs().slice(from).filter((l) => /varcache_apply: .*SET DateStyle='ISO'/.test(l));
      assert.equal(sets.length, 1, `DateStyle was SET ${sets.length} times`);
    } finally {
      await client.end();
    }
  });

  it('works from psql (PGOPTIONS) and psycopg, with a startup packet larger than pkt_buf', async (t) => {
    const url = `postgresql://${USER}@127.0.0.1:${p().port}/p0`;
    const r = await psql(url, 'SHOW TimeZone', { env: { PGOPTIONS: '-c timezone=Portugal' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'Portugal');
    // A startup packet larger than pkt_buf (4096): the last of many pairs wins.
    const big = `${'-c TimeZone=UTC '.repeat(400)}-c TimeZone=Asia/Tokyo`;
    const long = await psql(url, 'SHOW TimeZone', { env: { PGOPTIONS: big } });
    assert.equal(long.code, 0, long.stderr);
    assert.equal(long.stdout.trim(), 'Asia/Tokyo');
    const py = await psycopgPython();
    if ('skip' in py) return t.skip(py.skip);
    const script = 'import psycopg,sys\nwith psycopg.connect(sys.argv[1], options="-c datestyle=German,\\\\ YMD") as c: print(c.execute("SHOW DateStyle").fetchone()[0])';
    const r2 = await runCommand(py.python, ['-c', script, url]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(r2.stdout.trim(), 'German, YMD');
  });

  it('refuses anything but -c/-- pairs, and unknown names, with PgBouncer\'s messages', async () => {
    const refused = async (options: string, message: string) => {
      await assert.rejects(connect(p().port, options), (e: PgError) => {
        assert.equal(e.code, '08P01');
        assert.equal(e.message, message);
        return true;
      }, `options '${options}'`);
    };
    const format = "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";
    await refused('-d', format);
    await refused('-c timezone', format);
    await refused('-c TimeZone=UTC -x', format);
    await refused('-c enable_seqscan=false', 'unsupported startup parameter in options: enable_seqscan');
  });
});

describe('options with ignore_startup_parameters', () => {
  const { p } = usePooler({ ini: ini({ ignore_startup_parameters: 'options' }), dumpLogs: { clusters: () => [setup.cluster] } });

  it('drops unknown names inside options when options is listed, and still applies the tracked ones', async () => {
    const client = await connect(p().port, '-c enable_seqscan=false -ctimezone=Portugal');
    try {
      assert.equal(await value(client, 'enable_seqscan'), 'on');
      assert.equal(await value(client, 'TimeZone'), 'Portugal');
    } finally {
      await client.end();
    }
    // A name listed on its own is dropped too; a startup packet larger than pkt_buf is fine.
    const big = await connect(p().port, `-c extra_float_digits=${'1'.repeat(4096)}`);
    await big.end();
  });
});
