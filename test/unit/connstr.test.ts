import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDatabaseDef, parseUserDef, quoteConnstrValue } from '../../src/config/connstr.js';

function db(text: string, name = 'app') {
  const r = parseDatabaseDef(name, text);
  if (!r.ok) assert.fail(`unexpected problems: ${r.problems.join('; ')}`);
  return r.value;
}

function dbProblems(text: string): readonly string[] {
  const r = parseDatabaseDef('app', text);
  assert.equal(r.ok, false, 'expected problems');
  return r.ok ? [] : r.problems;
}

test('a bare value list gives a DatabaseDef with defaults for what is missing', () => {
  const d = db('host=127.0.0.1 port=5433 dbname=real user=u password=p');
  assert.equal(db('max_db_client_connections=10').maxDbClientConnections, 10);
  assert.deepEqual(d, {
    name: 'app', hosts: ['127.0.0.1'], port: 5433, dbname: 'real', user: 'u', password: 'p', authUser: null,
    authQuery: null, authDbname: null, poolSize: null, minPoolSize: null, reservePoolSize: null, poolMode: null,
    maxDbConnections: null, maxDbClientConnections: null, serverLifetime: null, connectQuery: null, loadBalanceHosts: 'round-robin', startupParams: {},
  });
  const empty = db('');
  assert.deepEqual(empty.hosts, []);
  assert.equal(empty.port, 5432);
  assert.equal(empty.dbname, null);
});

test('quoted values keep blanks and take \\\' and \'\' escapes; ; and # inside are data', () => {
  const d = db(`password='a b' user='it''s' connect_query='SET a=1; SET b=''#x''' auth_user='o\\'k'`);
  assert.equal(d.password, 'a b');
  assert.equal(d.user, "it's");
  assert.equal(d.connectQuery, "SET a=1; SET b='#x'");
  assert.equal(d.authUser, "o'k");
  assert.equal(db(`password='back\\\\slash'`).password, 'back\\slash');
  // PgBouncer takes unquoted values literally, backslashes included.
  assert.equal(db('password=a\\b').password, 'a\\b');
});

test('blanks around = are allowed, as in libpq', () => {
  const d = db('host = db1  port =6000 dbname= x');
  assert.deepEqual(d.hosts, ['db1']);
  assert.equal(d.port, 6000);
  assert.equal(d.dbname, 'x');
});

test('host: a unix directory is one entry, a comma list is split', () => {
  assert.deepEqual(db('host=/var/run/postgresql').hosts, ['/var/run/postgresql']);
  assert.deepEqual(db('host=a.example,b.example,c').hosts, ['a.example', 'b.example', 'c']);
  assert.deepEqual(dbProblems('host=a,,b'), [`host: empty host name in 'a,,b'`]);
});

test('pool keys, the old reserve_pool name, server_lifetime and the four startup parameters', () => {
  const d = db(
    'pool_size=5 min_pool_size=1 reserve_pool=2 pool_mode=transaction max_db_connections=9 server_lifetime=1.5 ' +
      "client_encoding=UTF8 datestyle='ISO, MDY' timezone=UTC application_name=app1 auth_query='SELECT 1' auth_dbname=authdb",
  );
  assert.equal(d.poolSize, 5);
  assert.equal(d.minPoolSize, 1);
  assert.equal(d.reservePoolSize, 2);
  assert.equal(d.poolMode, 'transaction');
  assert.equal(d.maxDbConnections, 9);
  assert.equal(d.serverLifetime, 1.5);
  assert.equal(d.authQuery, 'SELECT 1');
  assert.equal(d.authDbname, 'authdb');
  assert.deepEqual(d.startupParams, { client_encoding: 'UTF8', DateStyle: 'ISO, MDY', TimeZone: 'UTC', application_name: 'app1' });
  assert.equal(db('reserve_pool_size=3').reservePoolSize, 3);
});

test('a key given twice: the later one wins', () => {
  assert.equal(db('port=1 port=2').port, 2);
});

test('every problem in one value is reported: syntax first, then each key in order', () => {
  assert.deepEqual(dbProblems("port=70000 pool_mode=fast pool_size=-1 bogus=1 server_lifetime=x stray password='open"), [
    `syntax error: expected '=' after 'stray'`,
    `unterminated quoted value for 'password'`,
    `port: invalid value '70000' (expected an integer 1..65535)`,
    `pool_mode: invalid value 'fast' (expected one of session, transaction, statement)`,
    `pool_size: invalid value '-1' (expected an integer >= 0)`,
    `unrecognized connection parameter 'bogus'`,
    `server_lifetime: invalid value 'x' (expected a number of seconds >= 0)`,
  ]);
});

test('an unknown key is "unrecognized connection parameter", as in PgBouncer', () => {
  assert.deepEqual(dbProblems('host=x sslmode=require'), [`unrecognized connection parameter 'sslmode'`]);
});

test('load_balance_hosts takes round-robin or disable', () => {
  assert.equal(db('load_balance_hosts=disable').loadBalanceHosts, 'disable');
  assert.deepEqual(dbProblems('load_balance_hosts=random'), [`load_balance_hosts: invalid value 'random' (expected one of round-robin, disable)`]);
});

test('[users] values', () => {
  const r = parseUserDef('alice', 'pool_mode=statement pool_size=3 reserve_pool_size=1 max_user_connections=7 max_user_client_connections=9 query_timeout=2.5 idle_transaction_timeout=30 client_idle_timeout=60 transaction_timeout=5');
  assert.ok(r.ok);
  assert.deepEqual(r.value, {
    name: 'alice', poolMode: 'statement', poolSize: 3, reservePoolSize: 1, maxUserConnections: 7, maxUserClientConnections: 9,
    queryTimeout: 2.5, idleTransactionTimeout: 30, transactionTimeout: 5, clientIdleTimeout: 60,
  });
  const bad = parseUserDef('bob', 'pool_mode=x host=y');
  assert.equal(bad.ok, false);
  assert.deepEqual(bad.ok ? [] : bad.problems, [
    `pool_mode: invalid value 'x' (expected one of session, transaction, statement)`,
    `unrecognized user parameter 'host'`,
  ]);
});

test('quoteConnstrValue round-trips through the parser', () => {
  for (const v of ['plain', '', 'a b', "it's", 'back\\slash', `mix 'of' \\ all;#`]) {
    assert.equal(db(`password=${quoteConnstrValue(v)} port=1`).password, v);
  }
  assert.equal(quoteConnstrValue('plain'), 'plain');
});
