import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  identAllows,
  loadHbaFile,
  loadIdentFile,
  matchHba,
  noMatchMessage,
  parseHba,
  parseIdentMap,
  type HbaConn,
  type HbaRule,
} from '../../src/client/hba.js';

const dir = mkdtempSync(join(tmpdir(), 'pgpool-hba-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const hbaPath = join(dir, 'pg_hba.conf');

/** Parse text that must be clean. */
function rules(text: string, file = hbaPath): HbaRule[] {
  const r = parseHba(text, file);
  assert.deepEqual(r.problems, []);
  return r.rules;
}

const tcp = (addr: string, extra: Partial<HbaConn> = {}): HbaConn => ({ unix: false, tls: false, addr, database: 'app', user: 'alice', ...extra });
const tls = (addr: string, extra: Partial<HbaConn> = {}): HbaConn => tcp(addr, { tls: true, ...extra });
const unix = (extra: Partial<HbaConn> = {}): HbaConn => ({ unix: true, tls: false, addr: '', database: 'app', user: 'alice', ...extra });

/** The line number of the rule that matched, or null. */
const lineOf = (rs: readonly HbaRule[], conn: HbaConn): number | null => matchHba(rs, conn)?.line ?? null;

test('a full rule: fields, comments, blank lines, quoted names, tabs', () => {
  const rs = rules(['# comment', '', 'hostssl\t"my db",other  alice,"bob smith"  10.0.0.0/8  scram-sha-256   # trailing'].join('\n'));
  assert.equal(rs.length, 1);
  const [r] = rs;
  assert.ok(r !== undefined);
  assert.equal(r.file, hbaPath);
  assert.equal(r.line, 3);
  assert.equal(r.type, 'hostssl');
  assert.deepEqual([...r.databases.names], ['my db', 'other']);
  assert.equal(r.databases.all, false);
  assert.deepEqual([...r.users.names], ['alice', 'bob smith']);
  assert.deepEqual(r.address, { kind: 'ipv4', network: 0x0a000000n, prefix: 8 });
  assert.equal(r.method, 'scram-sha-256');
  assert.equal(r.map, null);
  assert.equal(lineOf(rs, tls('10.1.2.3', { database: 'my db', user: 'bob smith' })), 3);
  assert.equal(lineOf(rs, tls('10.1.2.3', { database: 'My db', user: 'bob smith' })), null, 'names are case-sensitive');
  assert.equal(lineOf(rs, tls('11.1.2.3', { database: 'other' })), null);
});

test('every method parses; local lines have no address', () => {
  const text = ['local all all trust', 'local all all reject', 'local all all md5', 'local all all password', 'local all all scram-sha-256', 'local all all peer', 'hostssl all all all cert'].join('\n');
  const rs = rules(text);
  assert.deepEqual(rs.map((r) => r.method), ['trust', 'reject', 'md5', 'password', 'scram-sha-256', 'peer', 'cert']);
  assert.equal(rs[0]?.address, null);
  assert.deepEqual(rs[6]?.address, { kind: 'all' });
});

test('comma lists continue after whitespace following a comma, and "" is one quote', () => {
  const [r] = rules('host db1, db2,db3 "we""ird" 127.0.0.1/32 md5');
  assert.deepEqual([...(r?.databases.names ?? [])], ['db1', 'db2', 'db3']);
  assert.deepEqual([...(r?.users.names ?? [])], ['we"ird']);
});

test('what PgBouncer reads is read: blanks before a comma, an address with bits outside its mask (a line that never matches, with a warning)', () => {
  // Both were refused, so a RELOAD of PgBouncer's own test files failed: `user1,user2 , user3`
  // ("empty entry") and `192.168.1.1/0`.
  const r = parseHba(['host tmp1,all user1,user2 , user3 16.0.0.0/8 md5', 'hostssl all all 192.168.1.1/0 md5', 'hostssl all all 0.0.0.0/0 trust'].join('\n'), hbaPath);
  assert.deepEqual(r.problems, []);
  assert.deepEqual([...(r.rules[0]?.users.names ?? [])], ['user1', 'user2', 'user3']);
  assert.equal(lineOf(r.rules, tcp('16.0.0.1', { user: 'user3' })), 1);
  // PgBouncer compares the masked client address with the unmasked one: never equal.
  assert.deepEqual(r.rules[1]?.address, { kind: 'none' });
  assert.equal(lineOf(r.rules, tls('192.168.1.1')), 3);
  assert.equal(lineOf(r.rules, tls('10.0.0.1')), 3);
  assert.equal(r.warnings.length, 1);
  assert.equal(r.warnings[0]?.line, 2);
  assert.match(r.warnings[0]?.message ?? '', /never matches/);
  // Real garbage is still refused with its line.
  const bad = parseHba('host all user1, , user2 0.0.0.0/0 md5', hbaPath);
  assert.deepEqual(bad.problems.map((p) => [p.line, p.message]), [[1, 'empty entry in a comma-separated list']]);
});

test('first match wins', () => {
  const rs = rules(['host app bob 0.0.0.0/0 reject', 'host all all 10.0.0.0/8 trust', 'host all all 0.0.0.0/0 md5'].join('\n'));
  assert.equal(matchHba(rs, tcp('10.0.0.1', { user: 'bob' }))?.method, 'reject');
  assert.equal(matchHba(rs, tcp('10.0.0.1', { user: 'bob', database: 'other' }))?.method, 'trust');
  assert.equal(matchHba(rs, tcp('10.0.0.1'))?.method, 'trust');
  assert.equal(matchHba(rs, tcp('192.168.0.1'))?.method, 'md5');
  assert.equal(matchHba(rs, unix()), null);
});

test('connection types: local, host, hostssl, hostnossl', () => {
  const only = (type: string): HbaRule[] => rules(type === 'local' ? 'local all all trust' : `${type} all all all trust`);
  const cases: [string, boolean, boolean, boolean][] = [
    // type, unix, plain TCP, TLS TCP
    ['local', true, false, false],
    ['host', false, true, true],
    ['hostssl', false, false, true],
    ['hostnossl', false, true, false],
  ];
  for (const [type, u, plain, secure] of cases) {
    const rs = only(type);
    assert.equal(matchHba(rs, unix()) !== null, u, `${type} unix`);
    assert.equal(matchHba(rs, tcp('1.2.3.4')) !== null, plain, `${type} plain`);
    assert.equal(matchHba(rs, tls('1.2.3.4')) !== null, secure, `${type} tls`);
  }
});

test('database keywords: all, sameuser, replication; quoted keywords are names', () => {
  const rs = rules(['local sameuser all trust', 'local replication all peer', 'local "all","sameuser","replication" all md5', 'local all all reject'].join('\n'));
  assert.equal(lineOf(rs, unix({ database: 'alice' })), 1);
  assert.equal(lineOf(rs, unix({ database: 'app' })), 4);
  assert.equal(lineOf(rs, unix({ replication: true })), 2);
  assert.equal(lineOf(rs, unix({ database: 'all' })), 3);
  assert.equal(lineOf(rs, unix({ database: 'sameuser' })), 3);
  assert.equal(lineOf(rs, unix({ database: 'replication' })), 3);
  // `all` never matches a physical replication connection, nor does a database name.
  const noRepl = rules(['local all all trust', 'local app all trust'].join('\n'));
  assert.equal(lineOf(noRepl, unix({ replication: true })), null);
  const sameuser = rules('local sameuser all trust');
  assert.equal(lineOf(sameuser, unix({ database: 'alice', replication: true })), null);
});

test('user field: all, names, and quoted "all" as a name', () => {
  const rs = rules(['local all "all" md5', 'local all bob,carol trust', 'local all all reject'].join('\n'));
  assert.equal(lineOf(rs, unix({ user: 'all' })), 1);
  assert.equal(lineOf(rs, unix({ user: 'carol' })), 2);
  assert.equal(lineOf(rs, unix({ user: 'dave' })), 3);
});

test('@file names: relative to the hba file, whitespace/comma separated, comments, keywords, nesting', () => {
  writeFileSync(join(dir, 'dbs.txt'), '# databases\nsales, hr\n  "quoted db"  # trailing comment\n');
  writeFileSync(join(dir, 'admins.txt'), 'root ops\n@more.txt\n');
  writeFileSync(join(dir, 'more.txt'), 'backup\n');
  writeFileSync(join(dir, 'everyone.txt'), 'all\n');
  const rs = rules(['host @dbs.txt @admins.txt 0.0.0.0/0 trust', `host all @${join(dir, 'everyone.txt')} ::1/128 md5`].join('\n'));
  assert.deepEqual([...(rs[0]?.databases.names ?? [])].sort(), ['hr', 'quoted db', 'sales']);
  assert.deepEqual([...(rs[0]?.users.names ?? [])].sort(), ['backup', 'ops', 'root']);
  assert.equal(lineOf(rs, tcp('1.1.1.1', { database: 'hr', user: 'backup' })), 1);
  assert.equal(lineOf(rs, tcp('1.1.1.1', { database: 'quoted db', user: 'root' })), 1);
  assert.equal(lineOf(rs, tcp('1.1.1.1', { database: 'app', user: 'root' })), null);
  assert.equal(rs[1]?.users.all, true);
});

test('@file problems: missing file, bad names inside, self-inclusion', () => {
  writeFileSync(join(dir, 'bad-users.txt'), 'ok\n+group\n');
  writeFileSync(join(dir, 'loop.txt'), '@loop.txt\n');
  const r = parseHba(['host @nope.txt all 0.0.0.0/0 reject', 'host all @bad-users.txt 0.0.0.0/0 reject', 'local @loop.txt all trust', 'local @ all trust'].join('\n'), hbaPath);
  assert.deepEqual(r.rules, []);
  assert.equal(r.problems.length, 4);
  const [missing, inner, loop, empty] = r.problems;
  assert.equal(missing?.line, 1);
  assert.equal(missing?.file, hbaPath);
  assert.match(missing?.message ?? '', /cannot read @nope\.txt/);
  assert.equal(inner?.file, join(dir, 'bad-users.txt'));
  assert.equal(inner?.line, 2);
  assert.match(inner?.message ?? '', /\+group/);
  assert.equal(loop?.file, join(dir, 'loop.txt'));
  assert.match(loop?.message ?? '', /include cycle/);
  assert.equal(empty?.line, 4);
  assert.match(empty?.message ?? '', /file name/);
  for (const p of r.problems) assert.equal(p.setting, 'auth_hba_file');
});

test('addresses: CIDR, address + netmask, plain addresses, all, IPv6', () => {
  const rs = rules(
    [
      'host all all 192.168.1.0/24 trust', // 1
      'host all all 172.16.0.0 255.240.0.0 md5', // 2
      'host all all 10.9.8.7 password', // 3 = /32
      'host all all 2001:db8::/32 scram-sha-256', // 4
      'host all all fe80:: ffff:ffff:ffff:ffff:: trust', // 5
      'host all all ::1 md5', // 6 = /128
      'host all all ::ffff:100.64.0.0/106 trust', // 7: written as IPv4-mapped = 100.64.0.0/10
      'host all all all reject', // 8
    ].join('\n'),
  );
  assert.deepEqual(rs[1]?.address, { kind: 'ipv4', network: 0xac100000n, prefix: 12 });
  assert.deepEqual(rs[6]?.address, { kind: 'ipv4', network: 0x64400000n, prefix: 10 });
  const cases: [string, number][] = [
    ['192.168.1.200', 1],
    ['192.168.2.1', 8],
    ['172.31.255.255', 2],
    ['172.32.0.0', 8],
    ['10.9.8.7', 3],
    ['10.9.8.6', 8],
    ['2001:db8:1::5', 4],
    ['2001:db9::', 8],
    ['fe80::abcd', 5],
    ['fe80::abcd%eth0', 5],
    ['fe80:0:0:1::1', 8],
    ['::1', 6],
    ['::2', 8],
    ['100.127.0.1', 7],
    ['::ffff:100.100.0.1', 7],
    ['::ffff:10.9.8.7', 3],
    ['::ffff:c0a8:101', 1],
  ];
  for (const [addr, line] of cases) assert.equal(lineOf(rs, tcp(addr)), line, addr);
  // An address the rules cannot read matches only `all`.
  assert.equal(lineOf(rs, tcp('not-an-ip')), 8);
});

test('IPv4 rules match IPv4-mapped clients; IPv6 rules match real IPv6 clients only', () => {
  const v4 = rules('host all all 127.0.0.1/32 trust');
  assert.equal(lineOf(v4, tcp('::ffff:127.0.0.1')), 1);
  assert.equal(lineOf(v4, tcp('::FFFF:7f00:1')), 1);
  assert.equal(lineOf(v4, tcp('::1')), null);
  const v6 = rules('host all all ::/0 trust');
  assert.equal(lineOf(v6, tcp('::1')), 1);
  // The same IPv4 client meets the same rules whether it came through a dual-stack listener.
  assert.equal(lineOf(v6, tcp('::ffff:127.0.0.1')), null);
  assert.equal(lineOf(v6, tcp('127.0.0.1')), null);
});

test('hostnossl reject lines refuse plain TCP on IPv4, IPv6 and IPv4-mapped, not TLS or unix', () => {
  const rs = rules(['hostnossl all all 0.0.0.0/0 reject', 'hostnossl all all ::/0 reject', 'host all all all scram-sha-256', 'local all all peer'].join('\n'));
  for (const addr of ['203.0.113.9', '2001:db8::9', '::ffff:203.0.113.9', '127.0.0.1', '::1']) {
    assert.equal(matchHba(rs, tcp(addr))?.method, 'reject', addr);
    assert.equal(matchHba(rs, tls(addr))?.method, 'scram-sha-256', addr);
  }
  assert.equal(matchHba(rs, unix())?.method, 'peer');
});

test('hostssl cert map=m, and peer map=', () => {
  const rs = rules(['hostssl all all 0.0.0.0/0 cert map=m', 'local all all peer map=os', 'hostssl all all ::/0 cert'].join('\n'));
  assert.equal(rs[0]?.method, 'cert');
  assert.equal(rs[0]?.map, 'm');
  assert.equal(rs[1]?.map, 'os');
  assert.equal(rs[2]?.map, null);
  assert.equal(matchHba(rs, tls('8.8.8.8'))?.map, 'm');
  assert.equal(matchHba(rs, tcp('8.8.8.8')), null);
});

test('every malformed line is a problem with its line number; none is skipped silently', () => {
  const lines = [
    'host all all 0.0.0.0/0 trust', // 1 good
    'hots all all 0.0.0.0/0 trust', // 2 unknown type
    'hostgssenc all all 0.0.0.0/0 trust', // 3 unsupported type
    'include other.conf', // 4 include
    'host all all 0.0.0.0/0 ldap ldapserver=x', // 5 ldap
    'local all all pam', // 6 pam
    'host all all 0.0.0.0/0 ident', // 7 ident
    'host all all 0.0.0.0/0 gss', // 8 gss
    'host all all 0.0.0.0/0 md6', // 9 unknown method
    'host all all 10.0.0.256/8 md5', // 10 bad address
    'host all all 10.0.0.0/33 md5', // 11 bad prefix
    'host all all 10.0.0.0 255.0.255.0 md5', // 12 non-contiguous mask
    'host all all 10.0.0.0 ffff:: md5', // 13 mask of the other family
    'host all all 10.0.0.0 255.0.0 md5', // 14 malformed mask
    'host all all 10.1.2.3/8 md5', // 15 host bits set: accepted with a warning, never matches
    'host all all samehost md5', // 16 samehost
    'host all all samenet md5', // 17 samenet
    'host all all db.example.com md5', // 18 DNS name
    'host all +admins 0.0.0.0/0 md5', // 19 +group
    'host samerole all 0.0.0.0/0 md5', // 20 samerole
    'hostssl all all 0.0.0.0/0 cert clientcert=verify-full', // 21 unsupported option
    'host all all 0.0.0.0/0 md5 map=m', // 22 map on md5
    'host all all 0.0.0.0/0', // 23 missing method
    'local all', // 24 missing fields
    'host all all', // 25 missing fields
    'host all all 10.0.0.0 255.0.0.0', // 26 missing method after a mask
    'local all all 127.0.0.1/32 trust', // 27 address on a local line
    'host "unterminated all all 0.0.0.0/0 md5', // 28 unterminated quote
    'host a,,b all 0.0.0.0/0 md5', // 29 empty list entry
    'local all all, # a list ending with a comma', // 30
    'host all all 0.0.0.0/0 peer', // 31 peer on host
    'hostnossl all all 0.0.0.0/0 cert', // 32 cert without TLS
    'host /^app.*$ all 0.0.0.0/0 md5', // 33 regex
    'hostssl all all 0.0.0.0/0 cert map=a map=b', // 34 map twice
    'hostssl all all 0.0.0.0/0 cert map=', // 35 empty map
    'hostssl all all 0.0.0.0/0 cert mapm', // 36 not name=value
    'HOST all all 0.0.0.0/0 trust', // 37 keywords are case-sensitive
    'host all all fe80::1%eth0 trust', // 38 zone in a rule
    'host all all 2001:db8::1/64 trust', // 39 host bits set, IPv6: as line 15
    'local all all reject', // 40 good
  ];
  const r = parseHba(lines.join('\n'), hbaPath);
  assert.deepEqual(r.rules.map((x) => x.line), [1, 15, 39, 40]);
  const byLine = new Map<number, string[]>();
  for (const p of r.problems) {
    assert.equal(p.file, hbaPath);
    assert.equal(p.setting, 'auth_hba_file');
    byLine.set(p.line, [...(byLine.get(p.line) ?? []), p.message]);
  }
  const expectProblem = (line: number, re: RegExp): void => {
    const got = byLine.get(line) ?? [];
    assert.ok(got.some((m) => re.test(m)), `line ${line}: ${JSON.stringify(got)} should match ${re}`);
  };
  const malformed = Array.from({ length: 38 }, (_, i) => i + 2).filter((line) => line !== 15 && line !== 39);
  for (const line of malformed) assert.ok(byLine.has(line), `line ${line} (${lines[line - 1]}) has no problem`);
  assert.deepEqual([...byLine.keys()].sort((a, b) => a - b), malformed);
  expectProblem(2, /unknown connection type "hots"/);
  expectProblem(3, /hostgssenc.*not supported by pgpool-ts/);
  expectProblem(4, /include directives are not supported/);
  expectProblem(5, /^method ldap is not supported by pgpool-ts$/);
  expectProblem(6, /^method pam is not supported by pgpool-ts$/);
  expectProblem(7, /^method ident is not supported by pgpool-ts$/);
  expectProblem(8, /^method gss is not supported by pgpool-ts$/);
  expectProblem(9, /unknown authentication method "md6"/);
  expectProblem(10, /invalid IP address "10\.0\.0\.256"/);
  expectProblem(11, /invalid prefix length/);
  expectProblem(12, /not contiguous/);
  expectProblem(13, /same address family/);
  expectProblem(14, /invalid netmask "255\.0\.0"/);
  expectProblem(16, /samehost is not supported/);
  expectProblem(17, /samenet is not supported/);
  expectProblem(18, /host names are not supported/);
  expectProblem(19, /group membership \(\+admins\)/);
  expectProblem(20, /samerole is not supported/);
  expectProblem(21, /option "clientcert=verify-full" is not supported/);
  expectProblem(22, /map= is only allowed with cert and peer/);
  expectProblem(23, /needs a database, a user, an address and a method/);
  expectProblem(24, /local line needs/);
  expectProblem(25, /host line needs/);
  expectProblem(26, /missing authentication method/);
  expectProblem(27, /local line has no address/);
  expectProblem(28, /unterminated quoted field/);
  expectProblem(29, /empty entry/);
  expectProblem(30, /ends with a comma/);
  expectProblem(31, /peer authentication only works on local/);
  expectProblem(32, /cert authentication needs TLS/);
  expectProblem(33, /regular expressions/);
  expectProblem(34, /more than once/);
  expectProblem(35, /needs a map name/);
  expectProblem(36, /options are name=value/);
  expectProblem(37, /unknown connection type "HOST"/);
  expectProblem(38, /invalid IP address/);
  assert.deepEqual(r.warnings.map((w) => [w.line, w.setting]), [[15, 'auth_hba_file'], [39, 'auth_hba_file']]);
  assert.match(r.warnings[0]?.message ?? '', /bits set outside its \/8 mask, so this line never matches .* 10\.0\.0\.0\/8/);
  assert.match(r.warnings[1]?.message ?? '', /the network is written 2001:db8::\/64/);
});

test('several problems on one line are all reported', () => {
  const r = parseHba('host all +g 0.0.0.0/0 md5 map=x', hbaPath);
  assert.deepEqual(r.rules, []);
  assert.equal(r.problems.length, 2);
  assert.ok(r.problems.every((p) => p.line === 1));
});

test('loadHbaFile reads a file; a missing file is a problem', () => {
  writeFileSync(hbaPath, 'local all all trust\r\nhost all all ::1/128 md5\r\n');
  const ok = loadHbaFile(hbaPath);
  assert.deepEqual(ok.problems, []);
  assert.deepEqual(ok.rules.map((r) => [r.line, r.method]), [[1, 'trust'], [2, 'md5']]);
  const missing = loadHbaFile(join(dir, 'absent.conf'));
  assert.deepEqual(missing.rules, []);
  assert.equal(missing.problems.length, 1);
  assert.equal(missing.problems[0]?.setting, 'auth_hba_file');
  assert.match(missing.problems[0]?.message ?? '', /cannot read the HBA file/);
});

test('the no-match message uses PostgreSQL words', () => {
  assert.equal(noMatchMessage(tcp('10.1.2.3')), 'no pg_hba.conf entry for host "10.1.2.3", user "alice", database "app", no encryption');
  assert.equal(noMatchMessage(tls('::1', { user: 'bob', database: 'db' })), 'no pg_hba.conf entry for host "::1", user "bob", database "db", SSL encryption');
  assert.equal(noMatchMessage(unix()), 'no pg_hba.conf entry for host "[local]", user "alice", database "app", no encryption');
  assert.equal(noMatchMessage(tcp('10.1.2.3', { replication: true })), 'no pg_hba.conf entry for replication connection from host "10.1.2.3", user "alice", no encryption');
});

test('ident maps: entries, comments, quoted names, all, exact match', () => {
  const text = ['# map system dbuser', 'certs  client.example.com  app', 'certs "CN With Space" "app user"  # comment', 'certs admin.example.com all', '', 'os  postgres  postgres'].join('\n');
  const r = parseIdentMap(text, 'ident.conf');
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.maps.get('certs'), [
    { system: 'client.example.com', dbUser: 'app', line: 2 },
    { system: 'CN With Space', dbUser: 'app user', line: 3 },
    { system: 'admin.example.com', dbUser: 'all', line: 4 },
  ]);
  assert.equal(identAllows(r.maps, 'certs', 'client.example.com', 'app'), true);
  assert.equal(identAllows(r.maps, 'certs', 'client.example.com', 'other'), false);
  assert.equal(identAllows(r.maps, 'certs', 'Client.Example.com', 'app'), false, 'system names are case-sensitive');
  assert.equal(identAllows(r.maps, 'certs', 'CN With Space', 'app user'), true);
  assert.equal(identAllows(r.maps, 'certs', 'admin.example.com', 'anyone'), true);
  assert.equal(identAllows(r.maps, 'os', 'postgres', 'postgres'), true);
  assert.equal(identAllows(r.maps, 'os', 'client.example.com', 'app'), false, 'maps are separate');
  assert.equal(identAllows(r.maps, 'nomap', 'postgres', 'postgres'), false);
});

test('ident map problems carry their line numbers', () => {
  const lines = [
    'm a b', // 1 good
    'm /^(.*)@example\\.com$ \\1', // 2 regex
    'm onlytwo', // 3 too few
    'm a b c', // 4 too many
    'm a,b c', // 5 list
    'm x +grp', // 6 group
    'm x "all"', // 7 quoted all
    'm "unterminated x', // 8
    'include other.conf', // 9
    'm "" x', // 10 empty system name
  ];
  const r = parseIdentMap(lines.join('\n'), 'ident.conf');
  assert.deepEqual(r.maps.get('m'), [{ system: 'a', dbUser: 'b', line: 1 }]);
  assert.deepEqual(r.problems.map((p) => p.line), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  for (const p of r.problems) {
    assert.equal(p.file, 'ident.conf');
    assert.equal(p.setting, 'auth_ident_file');
  }
  assert.equal(r.problems[0]?.message, 'regular expressions in ident maps are not supported');
});

test('loadIdentFile reads a file; a missing file is a problem', () => {
  const path = join(dir, 'ident.conf');
  writeFileSync(path, 'm cn user\n');
  const ok = loadIdentFile(path);
  assert.deepEqual(ok.problems, []);
  assert.equal(identAllows(ok.maps, 'm', 'cn', 'user'), true);
  const missing = loadIdentFile(join(dir, 'absent-ident.conf'));
  assert.equal(missing.maps.size, 0);
  assert.equal(missing.problems[0]?.setting, 'auth_ident_file');
  assert.equal(missing.problems[0]?.line, 0);
});
