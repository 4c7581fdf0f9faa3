import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError, configFromEnv, describeConfig, generatedIniFromEnv, loadConfig, settingRows, settingsWithoutEffect,
} from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';

const dir = mkdtempSync(join(tmpdir(), 'pgpool-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let seq = 0;
/** Write a file into the temp dir (a fresh name unless one is given) and return its path. */
function write(text: string, name = `f${++seq}.ini`): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** loadConfig must throw a ConfigError; return its message lines. */
function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.message, err.problems.map((p) => `${p.file}${p.line > 0 ? `:${p.line}` : ''}: ${p.setting === '' ? '' : `${p.setting}: `}${p.message}`).join('\n'));
    return err.message.split('\n');
  }
  assert.fail('expected a ConfigError');
}

const load = (text: string): Config => loadConfig(write(text));

test('defaults are PgBouncer 1.25 defaults', () => {
  const c = load('[pgbouncer]\n');
  const { configFile, authEntries, databases, users, peers, otherSettings, clientTls, serverTls, ...rest } = c;
  assert.ok(configFile?.startsWith(dir));
  assert.equal(authEntries.size, 0);
  assert.equal(databases.size, 0);
  assert.equal(users.size, 0);
  assert.equal(peers.size, 0);
  assert.deepEqual(rest, {
    listenAddr: [], listenPort: 6432, listenBacklog: 128, unixSocketDir: '/tmp', unixSocketMode: 0o777,
    unixSocketGroup: null, logfile: null, pidfile: null, user: null, soReuseport: false, peerId: 0,
    authType: 'md5', authFile: null, authHbaFile: null, authIdentFile: null, authUser: null,
    authQuery: 'SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname=$1 AND rolcanlogin',
    authDbname: null,
    poolMode: 'session', maxClientConn: 100, defaultPoolSize: 20, minPoolSize: 0, reservePoolSize: 0,
    reservePoolTimeout: 5, maxDbConnections: 0, maxUserConnections: 0, maxDbClientConnections: 0,
    maxUserClientConnections: 0, serverRoundRobin: false,
    serverResetQuery: 'DISCARD ALL', serverResetQueryAlways: false, serverCheckQuery: '<empty>',
    serverCheckDelay: 30, serverLifetime: 3600, serverIdleTimeout: 600, serverConnectTimeout: 15, serverLoginRetry: 15,
    serverFastClose: false, dnsMaxTtl: 15, dnsNxdomainTtl: 15,
    queryTimeout: 0, queryWaitTimeout: 120, clientIdleTimeout: 0, clientLoginTimeout: 60, idleTransactionTimeout: 0,
    transactionTimeout: 0, queryWaitNotify: 5,
    suspendTimeout: 10, cancelWaitTimeout: 10, autodbIdleTimeout: 3600,
    ignoreStartupParameters: [], trackExtraParameters: ['IntervalStyle'], applicationNameAddHost: false,
    maxPacketSize: 2147483647, maxPreparedStatements: 200, disablePqexec: false, scramIterations: 4096,
    tcpKeepalive: true, tcpKeepcnt: 0, tcpKeepidle: 0, tcpKeepintvl: 0, tcpUserTimeout: 0,
    tcpDeferAccept: true, tcpSocketBuffer: 0,
    adminUsers: [], statsUsers: [], logConnections: true, logDisconnections: true, logPoolerErrors: true,
    logStats: true, statsPeriod: 60, verbose: 0, logFormat: 'text',
    syslog: false, syslogIdent: 'pgbouncer', syslogFacility: 'daemon', syslogSocket: '/dev/log',
    metricsListenAddr: '127.0.0.1', metricsPort: 0, workers: 1,
  });
  assert.deepEqual(clientTls, {
    sslmode: 'disable', keyFile: null, certFile: null, caFile: null, crlFile: null,
    protocols: 'secure', ciphers: 'default', tls13Ciphers: '', ecdhCurve: 'auto', dheParams: 'auto',
  });
  assert.deepEqual(serverTls, {
    sslmode: 'prefer', keyFile: null, certFile: null, caFile: null, crlFile: null,
    protocols: 'secure', ciphers: 'default', tls13Ciphers: '',
  });
  assert.equal(otherSettings.get('pkt_buf'), '4096');
  assert.deepEqual(settingsWithoutEffect(load('')), []);
  assert.deepEqual(settingsWithoutEffect(load('[pgbouncer]\npkt_buf = 8192\nsbuf_loopcnt = 5\nclient_tls_dheparams = legacy\n')), [
    "client_tls_dheparams = legacy works as auto: OpenSSL 3 refuses PgBouncer's 1024-bit DH group",
    'pkt_buf = 8192 has no effect: Node sizes its own read buffers; startup packets of up to 10000 bytes and messages of up to max_packet_size are read whatever it says',
  ]);
  // An empty file is a valid config too.
  assert.equal(load('').listenPort, 6432);
});

test('a realistic pgbouncer.ini with %include, comments, quoted connstrs, * fallback and [users]', () => {
  const userlist = write('"app" "md5d0763edaa9d9bd2a9516280e9044d885"\n"admin" "adminpw"\n', 'userlist.txt');
  // Included by a path relative to the including file's directory (the cwd is elsewhere).
  mkdirSync(join(dir, 'conf.d'), { recursive: true });
  write(['; more databases', '[databases]', 'reports = host=reports.internal dbname=reporting pool_mode=session', ''].join('\n'), 'conf.d/extra.ini');
  const main = write([
    ';; PgBouncer configuration',
    '[databases]',
    '# the app database',
    `app = host=10.0.0.5 port=5433 dbname=appdb user=app password='s3cr3t with space' pool_size=30 connect_query='SET search_path=app; SET x=1'`,
    '"odd name" = host=/var/run/postgresql dbname=odd',
    '* = host=10.0.0.9 reserve_pool=2',
    '',
    '%include conf.d/extra.ini',
    '',
    '[users]',
    'app = pool_mode=transaction max_user_connections=50',
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1, ::1',
    'listen_port = 6543',
    `auth_file = ${userlist}`,
    'auth_type = scram-sha-256',
    'pool_mode = transaction',
    'server_reset_query = DISCARD ALL',
    'ignore_startup_parameters = extra_float_digits, search_path',
    'admin_users = admin',
    'client_tls_sslmode = disable',
    'server_tls_sslmode = require',
    'syslog = yes',
    'unix_socket_mode = 0700',
    'server_lifetime = 1800.5',
    '[peers]',
    '1 = host=/tmp/pgbouncer1',
    '',
  ].join('\n'), 'pgbouncer.ini');

  const c = loadConfig(main);
  assert.deepEqual([...c.databases.keys()], ['app', 'odd name', '*', 'reports']);
  const app = c.databases.get('app');
  assert.deepEqual(app?.hosts, ['10.0.0.5']);
  assert.equal(app?.port, 5433);
  assert.equal(app?.password, 's3cr3t with space');
  assert.equal(app?.poolSize, 30);
  assert.equal(app?.connectQuery, 'SET search_path=app; SET x=1');
  assert.deepEqual(c.databases.get('odd name')?.hosts, ['/var/run/postgresql']);
  assert.equal(c.databases.get('*')?.reservePoolSize, 2);
  assert.equal(c.databases.get('reports')?.poolMode, 'session');
  assert.equal(c.users.get('app')?.maxUserConnections, 50);
  assert.deepEqual(c.listenAddr, ['127.0.0.1', '::1']);
  assert.equal(c.listenPort, 6543);
  assert.equal(c.authType, 'scram-sha-256');
  assert.equal(c.poolMode, 'transaction');
  assert.deepEqual(c.ignoreStartupParameters, ['extra_float_digits', 'search_path']);
  assert.deepEqual(c.adminUsers, ['admin']);
  assert.equal(c.serverTls.sslmode, 'require');
  assert.equal(c.unixSocketMode, 0o700);
  assert.equal(c.serverLifetime, 1800.5);
  assert.equal(c.syslog, true);
  assert.deepEqual([...c.authEntries.keys()], ['app', 'admin']);
  assert.equal(c.authEntries.get('admin')?.secret, 'adminpw');
  assert.equal(
    describeConfig(c),
    'pgbouncer.ini: OK (4 databases, 1 user, auth_type=scram-sha-256, 2 auth_file entries, pool_mode=transaction, listen 127.0.0.1:6543, [::1]:6543, /tmp/.s.PGSQL.6543, peer_id=0 of 1 peer)',
  );
});

test('the config is deep-frozen', () => {
  const c = load('[databases]\napp = host=x\n[pgbouncer]\nlisten_addr = 0.0.0.0\n');
  assert.ok(Object.isFrozen(c));
  assert.ok(Object.isFrozen(c.listenAddr));
  assert.ok(Object.isFrozen(c.clientTls));
  assert.ok(Object.isFrozen(c.databases));
  assert.ok(Object.isFrozen(c.databases.get('app')));
  assert.ok(Object.isFrozen(c.databases.get('app')?.hosts));
  assert.throws(() => {
    (c as { listenPort: number }).listenPort = 1;
  }, TypeError);
});

test('a key given twice takes the later value, in [pgbouncer] and [databases]', () => {
  const c = load('[pgbouncer]\nlisten_port = 1111\npool_mode = session\nlisten_port = 2222\n[databases]\na = port=1\na = port=2\n');
  assert.equal(c.listenPort, 2222);
  assert.equal(c.databases.get('a')?.port, 2);
  // Only the winning line is validated: a bad value that was overridden does not count.
  assert.equal(load('[pgbouncer]\nlisten_port = oops\nlisten_port = 3333\n').listenPort, 3333);
});

test('an empty value is the setting\'s off/empty', () => {
  const c = load([
    '[pgbouncer]',
    'server_check_query =',
    'server_reset_query =',
    'tcp_keepalive =',
    'query_wait_timeout =',
    'default_pool_size =',
    'track_extra_parameters =',
    'unix_socket_dir =',
    'listen_addr = *',
    'client_tls_sslmode =',
    'auth_user =',
    'client_tls_ciphers =',
  ].join('\n'));
  assert.equal(c.serverCheckQuery, '');
  assert.equal(c.serverResetQuery, '');
  assert.equal(c.tcpKeepalive, false);
  assert.equal(c.queryWaitTimeout, 0);
  assert.equal(c.defaultPoolSize, 0);
  assert.deepEqual(c.trackExtraParameters, []);
  assert.equal(c.unixSocketDir, '');
  assert.equal(c.clientTls.sslmode, 'disable');
  assert.equal(c.authUser, null);
  assert.equal(c.clientTls.ciphers, 'default', 'an empty cipher list means the default list');
  // A setting with no "off" says so.
  const f = write('[pgbouncer]\npool_mode =\nlisten_port =\n');
  assert.deepEqual(problemsOf(() => loadConfig(f)), [
    `${f}:2: pool_mode: needs a value (expected one of session, transaction, statement)`,
    `${f}:3: listen_port: needs a value (expected an integer 1..65535)`,
  ]);
});

test('values: booleans in every spelling; quoted values are unquoted; ; and # are data, as in PgBouncer', () => {
  const c = load([
    '[pgbouncer]',
    'log_connections = off',
    'log_disconnections = No',
    'log_stats = TRUE',
    'server_round_robin = on',
    'server_reset_query = "DISCARD ALL"',
    'server_check_query = \'select 1\'',
    'unix_socket_dir = ""',
    'listen_addr = 127.0.0.1',
    'auth_query = SELECT usename, passwd FROM pgbouncer.get_auth($1); -- #1',
  ].join('\n'));
  assert.equal(c.logConnections, false);
  assert.equal(c.logDisconnections, false);
  assert.equal(c.logStats, true);
  assert.equal(c.serverRoundRobin, true);
  assert.equal(c.serverResetQuery, 'DISCARD ALL');
  assert.equal(c.serverCheckQuery, 'select 1');
  assert.equal(c.unixSocketDir, '');
  assert.equal(c.authQuery, 'SELECT usename, passwd FROM pgbouncer.get_auth($1); -- #1');
  assert.equal(load('[pgbouncer]\nserver_reset_query = RESET ALL; SET SESSION AUTHORIZATION DEFAULT\n').serverResetQuery, 'RESET ALL; SET SESSION AUTHORIZATION DEFAULT');
  // So there are no inline comments: PgBouncer rejects this line too.
  const f = write('[pgbouncer]\nlisten_port = 7000 ; the port\n');
  assert.deepEqual(problemsOf(() => loadConfig(f)), [`${f}:2: listen_port: invalid value '7000 ; the port' (expected an integer 1..65535)`]);
});

test('a misspelt setting gets a suggestion', () => {
  const f = write('[pgbouncer]\nlisten_addr = *\nlisten_prot = 6432\ncompletely_unrelated_thing = 1\n');
  assert.deepEqual(problemsOf(() => loadConfig(f)), [
    `${f}:3: listen_prot: unknown setting (did you mean listen_port?)`,
    `${f}:4: completely_unrelated_thing: unknown setting`,
  ]);
});

test('every problem is reported at once, with the right file and line, included files too', () => {
  const inc = write(['[pgbouncer]', 'max_client_conn = lots', '[databases]', 'x = host=h frobnicate=1', ''].join('\n'), 'inc-bad.ini');
  const f = write([
    '[pgbouncer]',
    'pool_mode = fast',
    `%include ${inc}`,
    '[pgbouncer]',
    'default_pool_size = -5',
    'auth_type = pam',
    'this line is junk',
    '[databases]',
    'pgbouncer = host=x',
    '[nonsense]',
    'whatever = 1',
    '[users]',
    'u = pool_size=many',
    '%include missing.ini',
  ].join('\n'));
  assert.deepEqual(problemsOf(() => loadConfig(f)), [
    `${f}:7: syntax error (expected "key = value", "[section]" or "%include file")`,
    `${f}:10: unknown section [nonsense] (expected [pgbouncer], [databases], [users] or [peers])`,
    `${f}:14: %include: cannot read 'missing.ini' (tried ${join(process.cwd(), 'missing.ini')} and ${join(dir, 'missing.ini')})`,
    `${f}:2: pool_mode: invalid value 'fast' (expected one of session, transaction, statement)`,
    `${inc}:2: max_client_conn: invalid value 'lots' (expected an integer >= 1)`,
    `${f}:5: default_pool_size: invalid value '-5' (expected an integer >= 0)`,
    `${f}:6: auth_type: 'pam' is not supported by pgpool-ts (expected one of trust, any, plain, md5, scram-sha-256, cert, hba)`,
    `${inc}:4: x: unrecognized connection parameter 'frobnicate'`,
    `${f}:9: pgbouncer: the name pgbouncer is reserved for the admin console`,
    `${f}:13: u: pool_size: invalid value 'many' (expected an integer >= 0)`,
  ]);
});

test('bad numbers, times, modes, enums and TLS protocol lists name what is allowed', () => {
  const f = write([
    '[pgbouncer]',
    'listen_port = 99999',
    'server_lifetime = 1h',
    'unix_socket_mode = rwx',
    'server_tls_sslmode = maybe',
    'client_tls_protocols = tlsv1.2,legacy',
    'server_tls_protocols = tlsv1.2:sslv3',
    'log_stats = sometimes',
    'client_tls_dheparams = huge',
    'peer_id = 20000',
  ].join('\n'));
  assert.deepEqual(problemsOf(() => loadConfig(f)), [
    `${f}:2: listen_port: invalid value '99999' (expected an integer 1..65535)`,
    `${f}:3: server_lifetime: invalid value '1h' (expected a number of seconds >= 0)`,
    `${f}:4: unix_socket_mode: invalid value 'rwx' (expected an octal file mode such as 0777)`,
    `${f}:5: server_tls_sslmode: invalid value 'maybe' (expected one of disable, allow, prefer, require, verify-ca, verify-full)`,
    `${f}:6: client_tls_protocols: 'legacy' is not accepted (PgBouncer rejects it too; expected a comma- or colon-separated list of tlsv1, tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, all, secure, default (! negates))`,
    `${f}:7: server_tls_protocols: invalid value 'tlsv1.2:sslv3' (expected a comma- or colon-separated list of tlsv1, tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, all, secure, default (! negates))`,
    `${f}:8: log_stats: invalid value 'sometimes' (expected one of 0, 1, yes, no, on, off, true, false)`,
    `${f}:9: client_tls_dheparams: invalid value 'huge' (expected one of none, auto, legacy)`,
    `${f}:10: peer_id: invalid value '20000' (expected an integer 0..16383)`,
  ]);
  assert.equal(load('[pgbouncer]\nclient_tls_protocols = tlsv1.3, !tlsv1.2\n').clientTls.protocols, 'tlsv1.3, !tlsv1.2');
});

test('[peers]: id = host, port (6432), pool_size; so_reuseport and peer_id are read; mistakes name the line', () => {
  const c = load(['[pgbouncer]', 'so_reuseport = 1', 'peer_id = 2', '[peers]', '1 = host=/run/pgb1', '2 = host=10.0.0.2 port=7432 pool_size=3', ''].join('\n'));
  assert.equal(c.soReuseport, true);
  assert.equal(c.peerId, 2);
  assert.deepEqual([...c.peers.values()], [
    { id: 1, host: '/run/pgb1', port: 6432, poolSize: null },
    { id: 2, host: '10.0.0.2', port: 7432, poolSize: 3 },
  ]);
  const f = write(['[peers]', 'x = host=a', '0 = host=a', '70000 = host=a', '3 = port=1', '4 = host=a port=0 dbname=p', ''].join('\n'));
  assert.deepEqual(problemsOf(() => loadConfig(f)), [
    `${f}:2: [peers] x: a peer id must be a number from 1 to 65535`,
    `${f}:3: [peers] 0: a peer id must be a number from 1 to 65535`,
    `${f}:4: [peers] 70000: a peer id must be a number from 1 to 65535`,
    `${f}:5: [peers] 3: host is required (where to forward cancel requests for peer 3)`,
    `${f}:6: [peers] 4: port: invalid value '0' (expected an integer 1..65535)`,
    `${f}:6: [peers] 4: unrecognized peer parameter 'dbname'`,
  ]);
});

test('workers: a count 1..255 or auto (the CPUs); anything else is an error', () => {
  assert.equal(load('[pgbouncer]\nworkers = 3\n').workers, 3);
  const auto = load('[pgbouncer]\nworkers = auto\n').workers;
  assert.ok(auto >= 1 && auto <= 255);
  const f = write('[pgbouncer]\nworkers = 0\n');
  assert.deepEqual(problemsOf(() => loadConfig(f)), [`${f}:2: workers: invalid value '0' (expected auto or an integer 1..255)`]);
});

test('TLS and auth_type cross-checks point at the setting that needs the missing piece', () => {
  const key = write('key', 'server.key');
  const cert = write('cert', 'server.crt');
  const f1 = write('[pgbouncer]\nclient_tls_sslmode = require\n');
  assert.deepEqual(problemsOf(() => loadConfig(f1)), [
    `${f1}:2: client_tls_sslmode: 'require' needs client_tls_key_file`,
    `${f1}:2: client_tls_sslmode: 'require' needs client_tls_cert_file`,
  ]);
  const f2 = write(`[pgbouncer]\nclient_tls_key_file = ${key}\nclient_tls_cert_file = ${cert}\nclient_tls_sslmode = verify-ca\nauth_type = cert\n`);
  assert.deepEqual(problemsOf(() => loadConfig(f2)), [
    `${f2}:4: client_tls_sslmode: 'verify-ca' needs client_tls_ca_file to verify client certificates`,
    `${f2}:5: auth_type: 'cert' needs client_tls_sslmode=verify-full (it is verify-ca)`,
    `${f2}:5: auth_type: 'cert' needs client_tls_ca_file`,
  ]);
  const f3 = write('[pgbouncer]\nauth_type = cert\n');
  assert.deepEqual(problemsOf(() => loadConfig(f3)), [
    `${f3}:2: auth_type: 'cert' needs client_tls_sslmode=verify-full (it is disable)`,
    `${f3}:2: auth_type: 'cert' needs client_tls_ca_file`,
  ]);
  const f4 = write(`[pgbouncer]\nauth_type = hba\nclient_tls_ca_file = ${join(dir, 'nope.crt')}\nserver_tls_key_file = ${key}\n`);
  assert.deepEqual(problemsOf(() => loadConfig(f4)), [
    `${f4}:3: client_tls_ca_file: cannot read '${join(dir, 'nope.crt')}'`,
    `${f4}:4: server_tls_key_file: server_tls_key_file and server_tls_cert_file go together`,
    `${f4}:2: auth_type: 'hba' needs auth_hba_file`,
  ]);
  const f5 = write('[pgbouncer]\nlisten_addr =\nunix_socket_dir =\n');
  assert.deepEqual(problemsOf(() => loadConfig(f5)), [
    `${f5}:3: unix_socket_dir: nothing to listen on: listen_addr is empty and unix_socket_dir is disabled`,
  ]);
  // The complete cert setup loads.
  const c = load(`[pgbouncer]\nauth_type = cert\nclient_tls_sslmode = verify-full\nclient_tls_key_file = ${key}\nclient_tls_cert_file = ${cert}\nclient_tls_ca_file = ${cert}\nserver_tls_ca_file = system\n`);
  assert.equal(c.authType, 'cert');
  assert.equal(c.clientTls.caFile, cert);
  assert.equal(c.serverTls.caFile, 'system');
});

test('auth_file problems are reported with the userlist\'s own file and line', () => {
  const users = write('"good" "pw"\nbad line\n', 'bad-userlist.txt');
  const f = write(`[pgbouncer]\nauth_file = ${users}\nlisten_port = x\n`);
  assert.deepEqual(problemsOf(() => loadConfig(f)), [
    `${f}:3: listen_port: invalid value 'x' (expected an integer 1..65535)`,
    `${users}:2: auth_file: expected "user" "secret"`,
  ]);
  const g = write(`[pgbouncer]\nauth_file = ${join(dir, 'absent.txt')}\n`);
  assert.deepEqual(problemsOf(() => loadConfig(g)), [`${g}:2: auth_file: cannot read '${join(dir, 'absent.txt')}'`]);
});

test('include loops, settings outside a section and an unreadable main file', () => {
  const a = join(dir, 'loop-a.ini');
  const b = join(dir, 'loop-b.ini');
  writeFileSync(a, `[pgbouncer]\n%include ${b}\n`);
  writeFileSync(b, `listen_port = 7777\n%include ${a}\n`);
  const [ra, rb] = [realpathSync(a), realpathSync(b)];
  assert.deepEqual(problemsOf(() => loadConfig(a)), [`${b}:2: %include: include loop: ${ra} -> ${rb} -> ${ra}`]);

  const f = write('listen_port = 1\n[pgbouncer]\n');
  assert.deepEqual(problemsOf(() => loadConfig(f)), [`${f}:1: listen_port: setting outside of any section (expected [pgbouncer] before it)`]);

  const missing = join(dir, 'no-such.ini');
  const lines = problemsOf(() => loadConfig(missing));
  assert.equal(lines.length, 1);
  assert.match(lines[0] ?? '', new RegExp(`^${missing}: cannot read: ENOENT`));
});

test('an included file keeps the section it was included in, and its settings may be overridden later', () => {
  const inc = write('listen_port = 5000\npool_mode = statement\n', 'in-section.ini');
  const c = load(`[pgbouncer]\n%include ${inc}\nlisten_port = 5001\n`);
  assert.equal(c.listenPort, 5001);
  assert.equal(c.poolMode, 'statement');
});

test('settingRows lists every setting alphabetically, as SHOW CONFIG prints it', () => {
  const c = load('[pgbouncer]\nlisten_addr = 127.0.0.1,10.0.0.1\nserver_lifetime = 0.5\ntcp_keepalive = no\nsyslog_facility = LOCAL0\n');
  const rows = settingRows(c);
  const keys = rows.map((r) => r.key);
  assert.deepEqual(keys, [...keys].sort());
  assert.equal(new Set(keys).size, keys.length);
  const row = (k: string) => rows.find((r) => r.key === k);
  assert.deepEqual(row('listen_addr'), { key: 'listen_addr', value: '127.0.0.1,10.0.0.1', default: '', changeable: false });
  assert.deepEqual(row('server_lifetime'), { key: 'server_lifetime', value: '0.5', default: '3600', changeable: true });
  assert.deepEqual(row('tcp_keepalive'), { key: 'tcp_keepalive', value: '0', default: '1', changeable: true });
  assert.deepEqual(row('unix_socket_mode'), { key: 'unix_socket_mode', value: '0777', default: '0777', changeable: false });
  assert.deepEqual(row('syslog_facility'), { key: 'syslog_facility', value: 'local0', default: 'daemon', changeable: true });
  assert.deepEqual(row('server_check_query'), { key: 'server_check_query', value: '<empty>', default: '<empty>', changeable: true });
  const fixed = rows.filter((r) => !r.changeable).map((r) => r.key);
  assert.deepEqual(fixed, [
    'disable_pqexec', 'job_name', 'listen_addr', 'listen_backlog', 'listen_port', 'log_format', 'metrics_listen_addr', 'metrics_port',
    'pidfile', 'pkt_buf', 'resolv_conf',
    'service_name', 'so_reuseport', 'track_extra_parameters', 'unix_socket_dir', 'unix_socket_group', 'unix_socket_mode', 'user',
    'workers',
  ]);
  // With nothing set, every value is its default.
  for (const r of settingRows(load(''))) assert.equal(r.value, r.default, r.key);
});

test('configFromEnv: null without DATABASE_URL or DB_HOST', () => {
  assert.equal(configFromEnv({ PATH: '/bin', POOL_MODE: 'transaction' }), null);
  assert.equal(generatedIniFromEnv({}), null);
});

test('configFromEnv: DATABASE_URL plus settings from named and PGBOUNCER_ variables', () => {
  const env = {
    DATABASE_URL: 'postgres://app%40corp:p%40ss%3Bword@db.internal:5433/appdb?sslmode=require&application_name=web',
    POOL_MODE: 'transaction',
    DEFAULT_POOL_SIZE: '40',
    MAX_CLIENT_CONN: '500',
    AUTH_TYPE: 'scram-sha-256',
    PGBOUNCER_SERVER_RESET_QUERY: ' "DISCARD ALL; -- #1" ',
    PGBOUNCER_IGNORE_STARTUP_PARAMETERS: 'extra_float_digits',
    USER: 'root',
  };
  const c = configFromEnv(env);
  assert.ok(c !== null);
  assert.equal(c.configFile, null);
  assert.equal(c.poolMode, 'transaction');
  assert.equal(c.defaultPoolSize, 40);
  assert.equal(c.maxClientConn, 500);
  assert.equal(c.authType, 'scram-sha-256');
  assert.equal(c.serverResetQuery, ' "DISCARD ALL; -- #1" ', 'blanks, quotes, ; and # survive the generated ini');
  assert.deepEqual(c.ignoreStartupParameters, ['extra_float_digits']);
  assert.equal(c.user, null, 'the shell USER variable is not the user setting');
  assert.deepEqual(c.listenAddr, ['0.0.0.0']);
  assert.equal(c.serverTls.sslmode, 'require');
  const db = c.databases.get('appdb');
  assert.deepEqual(db?.hosts, ['db.internal']);
  assert.equal(db?.port, 5433);
  assert.equal(db?.user, 'app@corp');
  assert.equal(db?.password, 'p@ss;word');
  assert.deepEqual(db?.startupParams, { application_name: 'web' });
  assert.deepEqual(c.authEntries.get('app@corp'), { user: 'app@corp', secret: 'p@ss;word' });
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.authEntries));
  assert.equal(describeConfig(c), '(environment): OK (1 database, 0 users, auth_type=scram-sha-256, pool_mode=transaction, listen 0.0.0.0:6432, /tmp/.s.PGSQL.6432)');

  const shown = generatedIniFromEnv(env) ?? '';
  assert.ok(!shown.includes('p@ss;word'), 'the printed ini does not show the password');
  assert.match(shown, /^appdb = host=db\.internal port=5433 dbname=appdb user=app@corp application_name=web password=\*+$/m);
});

test('configFromEnv: DB_* variables, * fallback, and problems point at <environment> lines', () => {
  const c = configFromEnv({ DB_HOST: 'pg', DB_USER: 'u', DB_PASSWORD: "it's me", LISTEN_PORT: '7432', LISTEN_ADDR: '127.0.0.1', PGBOUNCER_LISTEN_PORT: '8432' });
  assert.ok(c !== null);
  assert.equal(c.listenPort, 8432, 'PGBOUNCER_<NAME> wins over <NAME>');
  assert.deepEqual(c.listenAddr, ['127.0.0.1']);
  const star = c.databases.get('*');
  assert.equal(star?.dbname, null);
  assert.equal(star?.password, "it's me");

  const env = { DB_HOST: 'pg', POOL_MODE: 'bogus', CLIENT_TLS_SSLMODE: 'require' };
  const lines = (generatedIniFromEnv(env) ?? '').split('\n');
  const lineOf = (prefix: string): number => lines.findIndex((l) => l.startsWith(prefix)) + 1;
  assert.deepEqual(problemsOf(() => configFromEnv(env)), [
    `<environment>:${lineOf('pool_mode')}: pool_mode: invalid value 'bogus' (expected one of session, transaction, statement)`,
    `<environment>:${lineOf('client_tls_sslmode')}: client_tls_sslmode: 'require' needs client_tls_key_file`,
    `<environment>:${lineOf('client_tls_sslmode')}: client_tls_sslmode: 'require' needs client_tls_cert_file`,
  ]);
  assert.deepEqual(problemsOf(() => configFromEnv({ DATABASE_URL: 'mysql://x/y' })), [
    `<environment>: DATABASE_URL: unsupported scheme 'mysql:' (expected postgres: or postgresql:)`,
  ]);
  assert.deepEqual(problemsOf(() => configFromEnv({ DB_HOST: 'pg', DB_PASSWORD: 'a\n[pgbouncer]' })), [
    `<environment>: DB_PASSWORD: value contains a line break`,
  ]);
});
