// auth_hba_file (PgBouncer's subset of pg_hba.conf) and auth_ident_file (pg_ident.conf maps).
// Pure apart from reading the files: text in, rules and problems out; matching is a function of
// the rules and the connection. Unlike PgBouncer, which skips a line it cannot parse with a
// warning (so a `reject` line can vanish and a weaker line behind it match instead), every line
// that is not understood completely is a problem, and the loader refuses the whole file. What
// PgBouncer reads without complaint is read the same way, with a warning where it is surprising.

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import type { ConfigProblem } from '../config/types.js';

export type HbaConnType = 'local' | 'host' | 'hostssl' | 'hostnossl';
export type HbaMethod = 'trust' | 'reject' | 'md5' | 'password' | 'scram-sha-256' | 'cert' | 'peer';

/** The user field: `all`, or a set of exact (case-sensitive) names. */
export interface UserMatcher {
  readonly all: boolean;
  readonly names: ReadonlySet<string>;
}

/** The database field; keywords and names may be mixed in one comma list. */
export interface DbMatcher extends UserMatcher {
  readonly sameuser: boolean;
  readonly replication: boolean;
}

/** `all`, or a network: the address as an integer (32 or 128 bits) with host bits zero. An
 * IPv4-mapped IPv6 range written in the file is stored as the IPv4 range it covers. `none`: an
 * address with bits outside its mask, which PgBouncer accepts and never matches. */
export type AddressMatcher =
  | { readonly kind: 'all' }
  | { readonly kind: 'none' }
  | { readonly kind: 'ipv4' | 'ipv6'; readonly network: bigint; readonly prefix: number };

export interface HbaRule {
  readonly file: string;
  readonly line: number;
  readonly type: HbaConnType;
  readonly databases: DbMatcher;
  readonly users: UserMatcher;
  /** null for `local` lines, which have no address field. */
  readonly address: AddressMatcher | null;
  readonly method: HbaMethod;
  /** The `map=` option (cert and peer only): an auth_ident_file map name. */
  readonly map: string | null;
}

export interface HbaConn {
  readonly unix: boolean;
  readonly tls: boolean;
  /** The remote IP address of a TCP client (IPv4, IPv6 or IPv4-mapped IPv6); ignored for unix. */
  readonly addr: string;
  readonly database: string;
  readonly user: string;
  /** A physical replication connection (`replication=true`). A logical one
   * (`replication=database`) is matched like an ordinary connection, as PostgreSQL does. */
  readonly replication?: boolean;
}

export interface HbaResult {
  readonly rules: HbaRule[];
  readonly problems: ConfigProblem[];
  /** Lines taken as PgBouncer takes them, though they probably do not say what was meant. */
  readonly warnings: ConfigProblem[];
}

export interface IdentEntry {
  readonly system: string;
  /** A database user name, or `all` for any. */
  readonly dbUser: string;
  readonly line: number;
}

export interface IdentResult {
  readonly maps: ReadonlyMap<string, readonly IdentEntry[]>;
  readonly problems: ConfigProblem[];
}

const HBA_SETTING = 'auth_hba_file';
const IDENT_SETTING = 'auth_ident_file';

const CONN_TYPES: readonly HbaConnType[] = ['local', 'host', 'hostssl', 'hostnossl'];
const METHODS: readonly HbaMethod[] = ['trust', 'reject', 'md5', 'password', 'scram-sha-256', 'cert', 'peer'];
/** Methods PostgreSQL or PgBouncer know; naming them gets a clearer message than "unknown". */
const FOREIGN_METHODS = new Set(['ldap', 'pam', 'ident', 'gss', 'sspi', 'radius', 'bsd', 'oauth', 'any', 'plain']);
const INCLUDE_DIRECTIVES = new Set(['include', 'include_if_exists', 'include_dir']);

// ---------------------------------------------------------------------------------------------
// Tokens. A line is whitespace-separated fields; a field is a comma list of tokens (PostgreSQL
// also continues a list across whitespace after a comma: `db1, db2`, PgBouncer before one too). `"…"` quotes, with `""` for
// one `"`, and a quoted token is never a keyword. `#` outside quotes starts a comment.

interface Token {
  readonly text: string;
  readonly quoted: boolean;
}

type Field = readonly Token[];

function tokenize(raw: string): { fields: Field[] } | { error: string } {
  const fields: Field[] = [];
  let open: Token[] | null = null;
  let i = 0;
  const space = (c: string): boolean => c === ' ' || c === '\t' || c === '\r' || c === '\n' || c === '\f' || c === '\v';
  for (;;) {
    while (i < raw.length && space(raw[i] ?? '')) i++;
    if (i >= raw.length || raw[i] === '#') break;
    let text = '';
    let quoted = false;
    while (i < raw.length) {
      const c = raw[i] ?? '';
      if (c === '"') {
        quoted = true;
        i++;
        for (;;) {
          if (i >= raw.length) return { error: 'unterminated quoted field' };
          if (raw[i] === '"') {
            if (raw[i + 1] !== '"') break;
            text += '"';
            i += 2;
          } else {
            text += raw[i];
            i++;
          }
        }
        i++;
        continue;
      }
      if (c === ',' || c === '#' || space(c)) break;
      text += c;
      i++;
    }
    if (text === '' && !quoted) return { error: 'empty entry in a comma-separated list' };
    open ??= [];
    open.push({ text, quoted });
    // Blanks may also come before a comma, as PgBouncer reads `user1,user2 , user3`.
    let next = i;
    while (next < raw.length && space(raw[next] ?? '')) next++;
    if (raw[next] === ',') {
      i = next + 1;
    } else {
      fields.push(open);
      open = null;
    }
  }
  if (open !== null) return { error: 'a comma-separated list ends with a comma' };
  return { fields };
}

const show = (t: Token): string => JSON.stringify(t.text);

/** The one token of a field that must not be a list; null (and a problem) if it is one. */
function single(field: Field, what: string, problem: (m: string) => void): Token | null {
  const [first] = field;
  if (field.length !== 1 || first === undefined) {
    problem(`${what} must be a single value, not a comma-separated list`);
    return null;
  }
  return first;
}

// ---------------------------------------------------------------------------------------------
// Addresses, as integers so that a network test is two shifts.

function ipv4Value(text: string): bigint {
  return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(part), 0n);
}

/** `text` must already be a valid IPv6 address without a zone (isIP says 6). */
function ipv6Value(text: string): bigint {
  let s = text;
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    // An embedded IPv4 tail (`::ffff:1.2.3.4`) is the last two 16-bit groups.
    const v4 = ipv4Value(tail);
    s = `${s.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [left = '', right] = s.split('::');
  const head = left === '' ? [] : left.split(':');
  const rest = right ? right.split(':') : [];
  const groups = right === undefined ? head : [...head, ...new Array<string>(8 - head.length - rest.length).fill('0'), ...rest];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(`0x${g}`), 0n);
}

const MAPPED_PREFIX = 0xffffn; // ::ffff:0:0/96, shifted right by 32

interface Ip {
  readonly family: 'ipv4' | 'ipv6';
  readonly value: bigint;
}

/** Zones (`%eth0`) are refused in rules; a client address has its zone removed by the caller. */
function parseIp(text: string): Ip | null {
  if (text.includes('%')) return null;
  const family = isIP(text);
  if (family === 4) return { family: 'ipv4', value: ipv4Value(text) };
  if (family === 6) return { family: 'ipv6', value: ipv6Value(text) };
  return null;
}

const bitsOf = (family: Ip['family']): number => (family === 'ipv4' ? 32 : 128);

/** The prefix length a netmask stands for, or null if its one bits are not contiguous. */
function maskPrefix(mask: Ip): number | null {
  const bits = bitsOf(mask.family);
  const full = (1n << BigInt(bits)) - 1n;
  for (let prefix = 0; prefix <= bits; prefix++) {
    if (mask.value === (full ^ ((1n << BigInt(bits - prefix)) - 1n))) return prefix;
  }
  return null;
}

function hostBitsClear(ip: Ip, prefix: number): boolean {
  return ip.value % (1n << BigInt(bitsOf(ip.family) - prefix)) === 0n;
}

function formatIp(ip: Ip): string {
  if (ip.family === 'ipv4') {
    return [24n, 16n, 8n, 0n].map((shift) => ((ip.value >> shift) & 0xffn).toString()).join('.');
  }
  const groups: string[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(((ip.value >> shift) & 0xffffn).toString(16));
  // Shorten the longest run of zero groups to `::`, as people write IPv6 addresses.
  const runs = [...groups.join(':').matchAll(/(?:^|:)0(?::0)+(?::|$)/g)].map((m) => m[0]);
  const longest = runs.reduce((a, b) => (b.length > a.length ? b : a), '');
  return longest === '' ? groups.join(':') : groups.join(':').replace(longest, '::');
}

/** A client that reached a dual-stack listener as `::ffff:a.b.c.d` is the IPv4 client a.b.c.d, so
 * it meets the same rules whichever listener it came through. Likewise for a rule written as an
 * IPv4-mapped range (prefix 96 or longer). */
function unmap(ip: Ip, prefix: number): { ip: Ip; prefix: number } {
  if (ip.family === 'ipv6' && prefix >= 96 && ip.value >> 32n === MAPPED_PREFIX) {
    return { ip: { family: 'ipv4', value: ip.value & 0xffffffffn }, prefix: prefix - 96 };
  }
  return { ip, prefix };
}

const looksLikeMask = (text: string): boolean => /^[0-9.]+$/.test(text) || text.includes(':');

/**
 * The address field and, when it is a bare IP, an optional netmask field after it. Returns the
 * matcher and how many fields were used (1 or 2), or null after reporting the problem.
 */
function parseAddress(
  addrField: Field,
  next: Field | undefined,
  problem: (m: string) => void,
  warn: (m: string) => void,
): { matcher: AddressMatcher; used: number } | null {
  const tok = single(addrField, 'the address', problem);
  if (tok === null) return null;
  const text = tok.text;
  if (!tok.quoted && text === 'all') return { matcher: { kind: 'all' }, used: 1 };
  if (!tok.quoted && (text === 'samehost' || text === 'samenet')) {
    problem(`${text} is not supported by pgpool-ts; write the addresses as CIDR ranges`);
    return null;
  }
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (ip === null) {
    if (slash < 0 && /[a-z]/i.test(text) && /^[a-z0-9.-]+$/i.test(text)) {
      problem(`host names are not supported by pgpool-ts (${show(tok)}); use an IP address or CIDR range`);
    } else {
      problem(`invalid IP address ${JSON.stringify(addrText)}`);
    }
    return null;
  }
  const bits = bitsOf(ip.family);
  let prefix = bits;
  let used = 1;
  if (slash >= 0) {
    const len = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(len) || Number(len) > bits) {
      problem(`invalid prefix length in ${show(tok)} (0 to ${bits} for ${ip.family === 'ipv4' ? 'IPv4' : 'IPv6'})`);
      return null;
    }
    prefix = Number(len);
  } else if (next !== undefined && next.length === 1 && next[0] !== undefined && looksLikeMask(next[0].text)) {
    const maskText = next[0].text;
    used = 2;
    const mask = parseIp(maskText);
    if (mask === null) {
      problem(`invalid netmask ${JSON.stringify(maskText)}`);
      return null;
    }
    if (mask.family !== ip.family) {
      problem(`netmask ${JSON.stringify(maskText)} is not of the same address family as ${JSON.stringify(addrText)}`);
      return null;
    }
    const fromMask = maskPrefix(mask);
    if (fromMask === null) {
      problem(`netmask ${JSON.stringify(maskText)} is not contiguous`);
      return null;
    }
    prefix = fromMask;
  }
  if (!hostBitsClear(ip, prefix)) {
    // PgBouncer loads such a line with a warning and never matches it (PostgreSQL would ignore
    // the bits): the same here, so a file behaves as it did, with the likely intent named.
    const network: Ip = { family: ip.family, value: (ip.value >> BigInt(bits - prefix)) << BigInt(bits - prefix) };
    warn(
      `address ${JSON.stringify(addrText)} has bits set outside its /${prefix} mask, so this line never matches (as in ` +
        `PgBouncer); the network is written ${formatIp(network)}/${prefix}`,
    );
    return { matcher: { kind: 'none' }, used };
  }
  const norm = unmap(ip, prefix);
  return { matcher: { kind: norm.ip.family, network: norm.ip.value, prefix: norm.prefix }, used };
}

// ---------------------------------------------------------------------------------------------
// Database and user fields.

interface NameSink {
  all: boolean;
  sameuser: boolean;
  replication: boolean;
  names: Set<string>;
}

interface NameContext {
  readonly isDb: boolean;
  /** The file the tokens came from: `@file` names are relative to its directory. */
  readonly file: string;
  /** Files being read, outermost first, to refuse an `@file` cycle. */
  readonly including: readonly string[];
  readonly problem: (m: string) => void;
  /** Problems inside an `@file` point at that file's line. */
  readonly problemAt: (file: string, line: number, m: string) => void;
}

function addNames(tokens: Field, sink: NameSink, ctx: NameContext): void {
  for (const tok of tokens) {
    const t = tok.text;
    if (!tok.quoted && t === 'all') sink.all = true;
    else if (!tok.quoted && ctx.isDb && t === 'sameuser') sink.sameuser = true;
    else if (!tok.quoted && ctx.isDb && t === 'replication') sink.replication = true;
    else if (!tok.quoted && ctx.isDb && (t === 'samerole' || t === 'samegroup')) ctx.problem(`${t} is not supported by pgpool-ts`);
    else if (!tok.quoted && !ctx.isDb && t.startsWith('+')) ctx.problem(`group membership (${t}) is not supported by pgpool-ts`);
    else if (!tok.quoted && t.startsWith('@')) addNameFile(t.slice(1), sink, ctx);
    // PostgreSQL 16 reads a name starting with `/` as a regular expression; taken literally it
    // would quietly never match what was meant.
    else if (t.startsWith('/')) ctx.problem(`regular expressions (${show(tok)}) are not supported by pgpool-ts`);
    else if (t === '') ctx.problem(`empty ${ctx.isDb ? 'database' : 'user'} name`);
    else sink.names.add(t);
  }
}

function addNameFile(name: string, sink: NameSink, ctx: NameContext): void {
  if (name === '') {
    ctx.problem('@ must be followed by a file name');
    return;
  }
  const path = resolve(dirname(ctx.file), name);
  if (ctx.including.includes(path)) {
    ctx.problem(`@${name} is part of an include cycle (${path})`);
    return;
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    ctx.problem(`cannot read @${name}: ${(err as Error).message}`);
    return;
  }
  text.split(/\r?\n/).forEach((raw, index) => {
    const at = (m: string): void => ctx.problemAt(path, index + 1, m);
    const parsed = tokenize(raw);
    if ('error' in parsed) {
      at(parsed.error);
      return;
    }
    const inner: NameContext = { ...ctx, file: path, including: [...ctx.including, path], problem: at };
    for (const field of parsed.fields) addNames(field, sink, inner);
  });
}

function parseNames(field: Field, ctx: NameContext): NameSink {
  const sink: NameSink = { all: false, sameuser: false, replication: false, names: new Set() };
  addNames(field, sink, ctx);
  return sink;
}

// ---------------------------------------------------------------------------------------------
// HBA lines.

function parseHbaLine(
  fields: Field[],
  file: string,
  line: number,
  problem: (m: string) => void,
  problemAt: NameContext['problemAt'],
  warn: (m: string) => void,
): HbaRule | null {
  // Every problem on the line is reported, not just the first; any one of them drops the rule.
  let bad = false;
  const note = (m: string): void => {
    bad = true;
    problem(m);
  };
  const noteAt: NameContext['problemAt'] = (f, l, m) => {
    bad = true;
    problemAt(f, l, m);
  };

  const typeTok = single(fields[0] ?? [], 'the connection type', note);
  if (typeTok === null) return null;
  const typeText = typeTok.text;
  if (INCLUDE_DIRECTIVES.has(typeText)) {
    note(`${typeText} directives are not supported by pgpool-ts`);
    return null;
  }
  const type = CONN_TYPES.find((t) => t === typeText);
  if (type === undefined) {
    if (typeText.startsWith('host')) note(`connection type ${show(typeTok)} is not supported by pgpool-ts (use local, host, hostssl or hostnossl)`);
    else note(`unknown connection type ${show(typeTok)} (expected local, host, hostssl or hostnossl)`);
    return null;
  }
  const local = type === 'local';
  const needed = local ? 4 : 5;
  if (fields.length < needed) {
    note(local ? 'a local line needs a database, a user and a method' : `a ${type} line needs a database, a user, an address and a method`);
    return null;
  }

  const ctx = { file, including: [resolve(file)], problem: note, problemAt: noteAt };
  const dbs = parseNames(fields[1] ?? [], { ...ctx, isDb: true });
  const users = parseNames(fields[2] ?? [], { ...ctx, isDb: false });

  let address: AddressMatcher | null = null;
  let methodIndex = 3;
  if (!local) {
    const parsed = parseAddress(fields[3] ?? [], fields[4], note, warn);
    if (parsed === null) return null;
    address = parsed.matcher;
    methodIndex = 3 + parsed.used;
  }
  const methodField = fields[methodIndex];
  if (methodField === undefined) {
    note('missing authentication method after the address');
    return null;
  }
  const methodTok = single(methodField, 'the method', note);
  if (methodTok === null) return null;
  const method = METHODS.find((m) => m === methodTok.text);
  if (method === undefined) {
    if (FOREIGN_METHODS.has(methodTok.text)) note(`method ${methodTok.text} is not supported by pgpool-ts`);
    else if (local && (isIP(methodTok.text) !== 0 || methodTok.text.includes('/'))) note('a local line has no address field');
    else note(`unknown authentication method ${show(methodTok)}`);
    return null;
  }
  if (method === 'peer' && !local) note('peer authentication only works on local (unix socket) lines');
  if (method === 'cert' && (local || type === 'hostnossl')) note(`cert authentication needs TLS, which a ${type} connection never has`);

  let map: string | null = null;
  for (const optField of fields.slice(methodIndex + 1)) {
    const opt = single(optField, 'an option', note);
    if (opt === null) continue;
    const eq = opt.text.indexOf('=');
    if (eq < 0) {
      note(`unexpected ${show(opt)} after the method (options are name=value)`);
      continue;
    }
    const name = opt.text.slice(0, eq);
    const value = opt.text.slice(eq + 1);
    if (name !== 'map') note(`option ${show(opt)} is not supported by pgpool-ts (the only option is map= for cert and peer)`);
    else if (method !== 'cert' && method !== 'peer') note(`map= is only allowed with cert and peer, not ${method}`);
    else if (value === '') note('map= needs a map name');
    else if (map !== null) note('map= is given more than once');
    else map = value;
  }

  if (bad) return null;
  return {
    file,
    line,
    type,
    databases: { all: dbs.all, sameuser: dbs.sameuser, replication: dbs.replication, names: dbs.names },
    users: { all: users.all, names: users.names },
    address,
    method,
    map,
  };
}

/** Parse HBA text. `file` labels problems and anchors relative `@file` names. */
export function parseHba(text: string, file: string): HbaResult {
  const rules: HbaRule[] = [];
  const problems: ConfigProblem[] = [];
  const warnings: ConfigProblem[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const problemAt = (f: string, l: number, message: string): void => {
      problems.push({ file: f, line: l, setting: HBA_SETTING, message });
    };
    const problem = (message: string): void => problemAt(file, line, message);
    const warn = (message: string): void => void warnings.push({ file, line, setting: HBA_SETTING, message });
    const parsed = tokenize(raw);
    if ('error' in parsed) {
      problem(parsed.error);
      return;
    }
    if (parsed.fields.length === 0) return;
    const rule = parseHbaLine(parsed.fields, file, line, problem, problemAt, warn);
    if (rule !== null) rules.push(rule);
  });
  return { rules, problems, warnings };
}

function readOrProblem(path: string, setting: string, what: string): { text: string } | { problem: ConfigProblem } {
  try {
    return { text: readFileSync(path, 'utf8') };
  } catch (err) {
    return { problem: { file: path, line: 0, setting, message: `cannot read the ${what}: ${(err as Error).message}` } };
  }
}

export function loadHbaFile(path: string): HbaResult {
  const read = readOrProblem(path, HBA_SETTING, 'HBA file');
  return 'problem' in read ? { rules: [], problems: [read.problem], warnings: [] } : parseHba(read.text, path);
}

// ---------------------------------------------------------------------------------------------
// Matching.

function clientIp(addr: string): Ip | null {
  const zone = addr.indexOf('%');
  const ip = parseIp(zone < 0 ? addr : addr.slice(0, zone));
  return ip === null ? null : unmap(ip, bitsOf(ip.family)).ip;
}

function addressMatches(m: AddressMatcher, ip: Ip | null): boolean {
  if (m.kind === 'all') return true;
  if (m.kind === 'none') return false;
  if (ip === null || ip.family !== m.kind) return false;
  const shift = BigInt(bitsOf(ip.family) - m.prefix);
  return ip.value >> shift === m.network >> shift;
}

function databaseMatches(m: DbMatcher, conn: HbaConn): boolean {
  // PostgreSQL: a physical replication connection matches only the `replication` keyword, and
  // that keyword matches nothing else.
  if (conn.replication === true) return m.replication;
  return m.all || (m.sameuser && conn.database === conn.user) || m.names.has(conn.database);
}

/** The first rule that applies to the connection, or null (which means: refuse). */
export function matchHba(rules: readonly HbaRule[], conn: HbaConn): HbaRule | null {
  const ip = conn.unix ? null : clientIp(conn.addr);
  for (const rule of rules) {
    if (conn.unix !== (rule.type === 'local')) continue;
    if (rule.type === 'hostssl' && !conn.tls) continue;
    if (rule.type === 'hostnossl' && conn.tls) continue;
    if (rule.address !== null && !addressMatches(rule.address, ip)) continue;
    if (!databaseMatches(rule.databases, conn)) continue;
    if (!rule.users.all && !rule.users.names.has(conn.user)) continue;
    return rule;
  }
  return null;
}

/** PostgreSQL's FATAL text for a connection no rule matched. */
export function noMatchMessage(conn: HbaConn): string {
  const host = conn.unix ? '[local]' : conn.addr;
  const encryption = conn.tls ? 'SSL encryption' : 'no encryption';
  if (conn.replication === true) {
    return `no pg_hba.conf entry for replication connection from host "${host}", user "${conn.user}", ${encryption}`;
  }
  return `no pg_hba.conf entry for host "${host}", user "${conn.user}", database "${conn.database}", ${encryption}`;
}

// ---------------------------------------------------------------------------------------------
// Ident maps: `mapname system-username database-username`.

export function parseIdentMap(text: string, file: string): IdentResult {
  const maps = new Map<string, IdentEntry[]>();
  const problems: ConfigProblem[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    let bad = false;
    const problem = (message: string): void => {
      bad = true;
      problems.push({ file, line, setting: IDENT_SETTING, message });
    };
    const parsed = tokenize(raw);
    if ('error' in parsed) {
      problem(parsed.error);
      return;
    }
    const { fields } = parsed;
    if (fields.length === 0) return;
    const first = fields[0]?.[0];
    if (first !== undefined && !first.quoted && INCLUDE_DIRECTIVES.has(first.text) && fields.length === 2) {
      problem(`${first.text} directives are not supported by pgpool-ts`);
      return;
    }
    if (fields.length !== 3) {
      problem(`expected MAPNAME SYSTEM-USERNAME DATABASE-USERNAME, found ${fields.length} field${fields.length === 1 ? '' : 's'}`);
      return;
    }
    const [mapTok, sysTok, userTok] = [
      single(fields[0] ?? [], 'the map name', problem),
      single(fields[1] ?? [], 'the system user name', problem),
      single(fields[2] ?? [], 'the database user name', problem),
    ];
    if (mapTok === null || sysTok === null || userTok === null) return;
    if (mapTok.text === '') problem('empty map name');
    if (sysTok.text === '') problem('empty system user name');
    else if (sysTok.text.startsWith('/')) problem('regular expressions in ident maps are not supported');
    if (userTok.text === '') problem('empty database user name');
    else if (!userTok.quoted && userTok.text.startsWith('+')) problem(`group membership (${userTok.text}) is not supported by pgpool-ts`);
    // The entry stores `all` as the keyword, so a role literally named all cannot be expressed.
    else if (userTok.quoted && userTok.text === 'all') problem('"all" in quotes would still mean every user; a role named all cannot be mapped');
    if (bad) return;
    const entries = maps.get(mapTok.text) ?? [];
    entries.push({ system: sysTok.text, dbUser: userTok.text, line });
    maps.set(mapTok.text, entries);
  });
  return { maps, problems };
}

export function loadIdentFile(path: string): IdentResult {
  const read = readOrProblem(path, IDENT_SETTING, 'ident map file');
  return 'problem' in read ? { maps: new Map(), problems: [read.problem] } : parseIdentMap(read.text, path);
}

/** Whether map `mapName` lets the system (certificate or OS) name `systemName` log in as
 * `dbUser`. System names compare exactly; an entry whose database user is `all` allows any. */
export function identAllows(maps: IdentResult['maps'], mapName: string, systemName: string, dbUser: string): boolean {
  return (maps.get(mapName) ?? []).some((e) => e.system === systemName && (e.dbUser === 'all' || e.dbUser === dbUser));
}

/** The hba rules and ident maps of one config generation, loaded and cross-checked together. */
export interface AuthRules {
  readonly hba: readonly HbaRule[] | null;
  readonly ident: IdentResult['maps'];
  readonly problems: readonly ConfigProblem[];
  readonly warnings: readonly ConfigProblem[];
}

export function loadAuthRules(cfg: {
  readonly authType: string;
  readonly authHbaFile: string | null;
  readonly authIdentFile: string | null;
}): AuthRules {
  const problems: ConfigProblem[] = [];
  const warnings: ConfigProblem[] = [];
  let hba: HbaRule[] | null = null;
  if (cfg.authType === 'hba' && cfg.authHbaFile !== null) {
    const r = loadHbaFile(cfg.authHbaFile);
    hba = r.rules;
    problems.push(...r.problems);
    warnings.push(...r.warnings);
  }
  let ident: IdentResult['maps'] = new Map();
  if (cfg.authIdentFile !== null) {
    const r = loadIdentFile(cfg.authIdentFile);
    ident = r.maps;
    problems.push(...r.problems);
  }
  // A map= naming no map would refuse every login through that line: say so at load time.
  for (const rule of hba ?? []) {
    if (rule.map !== null && !ident.has(rule.map)) {
      problems.push({
        file: rule.file,
        line: rule.line,
        setting: HBA_SETTING,
        message: cfg.authIdentFile === null
          ? `map=${rule.map} needs auth_ident_file`
          : `map "${rule.map}" is not defined in ${cfg.authIdentFile}`,
      });
    }
  }
  return { hba, ident, problems, warnings };
}
