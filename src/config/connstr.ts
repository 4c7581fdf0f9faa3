// `[databases]`, `[users]` and `[peers]` values: libpq-like `key=value` lists, as PgBouncer's loader reads them.
// Pure: text in, a DatabaseDef/UserDef or every problem found out. load.ts adds file, line and name.

import type { DatabaseDef, LoadBalanceHosts, PeerDef, PoolMode, UserDef } from './types.js';

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly problems: readonly string[] };

interface ConnParam {
  readonly key: string;
  readonly value: string;
}

const POOL_MODES: readonly PoolMode[] = ['session', 'transaction', 'statement'];

/** Split `a=1 b = 'x y' c='it''s'` into pairs. Quoted values take `\'`, `\\` and `''`; unquoted
 * values run to the next blank and are taken literally, as PgBouncer does (so a backslash in an
 * unquoted password stays). A key given twice is listed twice; callers let the later one win.
 * Problems go into `problems` and splitting goes on, so one value reports all its mistakes. */
function splitConnstr(text: string, problems: string[]): ConnParam[] {
  const params: ConnParam[] = [];
  let i = 0;
  const n = text.length;
  const isBlank = (c: string | undefined): boolean => c === ' ' || c === '\t' || c === '\r' || c === '\n';
  while (i < n) {
    while (i < n && isBlank(text[i])) i++;
    if (i >= n) break;
    const keyStart = i;
    while (i < n && !isBlank(text[i]) && text[i] !== '=') i++;
    const key = text.slice(keyStart, i);
    while (i < n && isBlank(text[i])) i++;
    if (text[i] !== '=') {
      problems.push(`syntax error: expected '=' after '${key}'`);
      continue;
    }
    if (key === '') {
      problems.push(`syntax error: '=' without a parameter name`);
    }
    i++;
    // libpq also skips blanks after '=', so `host= port=1` gives host the value `port=1`.
    while (i < n && isBlank(text[i])) i++;
    let value = '';
    if (text[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        const c = text[i];
        if (c === '\\' && (text[i + 1] === "'" || text[i + 1] === '\\')) {
          value += text[i + 1];
          i += 2;
        } else if (c === "'" && text[i + 1] === "'") {
          value += "'";
          i += 2;
        } else if (c === "'") {
          i++;
          closed = true;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) {
        problems.push(`unterminated quoted value for '${key}'`);
      } else if (i < n && !isBlank(text[i])) {
        problems.push(`syntax error: missing blank after the quoted value of '${key}'`);
      }
    } else {
      const valueStart = i;
      while (i < n && !isBlank(text[i])) i++;
      value = text.slice(valueStart, i);
    }
    if (key !== '') params.push({ key: key.toLowerCase(), value });
  }
  return params;
}

/** Quote a value so splitConnstr gives it back unchanged (for ini text generated from env vars). */
export function quoteConnstrValue(value: string): string {
  if (value !== '' && !/[\s'\\]/.test(value)) return value;
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

// Typed readers shared by both sections. Each returns the value or pushes a problem and returns null.

function readCount(p: ConnParam, problems: string[]): number | null {
  if (/^\d+$/.test(p.value)) {
    const v = Number(p.value);
    if (v <= 2147483647) return v;
  }
  problems.push(`${p.key}: invalid value '${p.value}' (expected an integer >= 0)`);
  return null;
}

function readSeconds(p: ConnParam, problems: string[]): number | null {
  if (/^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(p.value)) return Number(p.value);
  problems.push(`${p.key}: invalid value '${p.value}' (expected a number of seconds >= 0)`);
  return null;
}

function readPoolMode(p: ConnParam, problems: string[]): PoolMode | null {
  const v = p.value.toLowerCase();
  const mode = POOL_MODES.find((m) => m === v);
  if (mode !== undefined) return mode;
  problems.push(`${p.key}: invalid value '${p.value}' (expected one of ${POOL_MODES.join(', ')})`);
  return null;
}

function readLoadBalance(p: ConnParam, problems: string[]): LoadBalanceHosts | null {
  const v = p.value.toLowerCase();
  if (v === 'round-robin' || v === 'disable') return v;
  problems.push(`${p.key}: invalid value '${p.value}' (expected one of round-robin, disable)`);
  return null;
}

function readPort(p: ConnParam, problems: string[]): number | null {
  if (/^\d+$/.test(p.value)) {
    const v = Number(p.value);
    if (v >= 1 && v <= 65535) return v;
  }
  problems.push(`${p.key}: invalid value '${p.value}' (expected an integer 1..65535)`);
  return null;
}

/** `host=`: one Unix socket directory (or `@abstract` name), taken whole because a path may hold a
 * comma; otherwise a comma list of host names (see load_balance_hosts). Empty = the Unix socket. */
function readHosts(p: ConnParam, problems: string[]): string[] {
  if (p.value === '') return [];
  if (p.value.startsWith('/') || p.value.startsWith('@')) return [p.value];
  const hosts = p.value.split(',').map((h) => h.trim());
  if (hosts.some((h) => h === '')) {
    problems.push(`host: empty host name in '${p.value}'`);
    return hosts.filter((h) => h !== '');
  }
  return hosts;
}

/** PgBouncer's connstr keys for the four startup parameters, mapped to the names the server uses. */
const STARTUP_PARAMS: Readonly<Record<string, string>> = {
  client_encoding: 'client_encoding',
  datestyle: 'DateStyle',
  timezone: 'TimeZone',
  application_name: 'application_name',
};

/** Parse one `[databases]` value; `name` is the entry's key ('*' for the fallback). */
export function parseDatabaseDef(name: string, text: string): Parsed<DatabaseDef> {
  const problems: string[] = [];
  const params = splitConnstr(text, problems);
  let hosts: string[] = [];
  let port = 5432;
  let dbname: string | null = null;
  let user: string | null = null;
  let password: string | null = null;
  let authUser: string | null = null;
  let authQuery: string | null = null;
  let authDbname: string | null = null;
  let poolSize: number | null = null;
  let minPoolSize: number | null = null;
  let reservePoolSize: number | null = null;
  let poolMode: PoolMode | null = null;
  let maxDbConnections: number | null = null;
  let maxDbClientConnections: number | null = null;
  let serverLifetime: number | null = null;
  let connectQuery: string | null = null;
  let loadBalanceHosts: LoadBalanceHosts = 'round-robin';
  const startupParams: Record<string, string> = {};
  const orNull = (v: string): string | null => (v === '' ? null : v);

  for (const p of params) {
    const serverName = STARTUP_PARAMS[p.key];
    if (serverName !== undefined) {
      startupParams[serverName] = p.value;
      continue;
    }
    switch (p.key) {
      case 'dbname': dbname = orNull(p.value); break;
      case 'host': hosts = readHosts(p, problems); break;
      case 'port': port = readPort(p, problems) ?? port; break;
      case 'user': user = orNull(p.value); break;
      case 'password': password = p.value; break;
      case 'auth_user': authUser = orNull(p.value); break;
      case 'auth_query': authQuery = orNull(p.value); break;
      case 'auth_dbname': authDbname = orNull(p.value); break;
      case 'pool_size': poolSize = readCount(p, problems); break;
      case 'min_pool_size': minPoolSize = readCount(p, problems); break;
      // `reserve_pool` is the name PgBouncer used before 1.24; old files still have it.
      case 'reserve_pool':
      case 'reserve_pool_size': reservePoolSize = readCount(p, problems); break;
      case 'pool_mode': poolMode = readPoolMode(p, problems); break;
      case 'max_db_connections': maxDbConnections = readCount(p, problems); break;
      case 'server_lifetime': serverLifetime = readSeconds(p, problems); break;
      case 'connect_query': connectQuery = orNull(p.value); break;
      case 'max_db_client_connections': maxDbClientConnections = readCount(p, problems); break;
      case 'load_balance_hosts': loadBalanceHosts = readLoadBalance(p, problems) ?? loadBalanceHosts; break;
      default:
        problems.push(`unrecognized connection parameter '${p.key}'`);
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    value: {
      name, hosts, port, dbname, user, password, authUser, authQuery, authDbname, poolSize, minPoolSize,
      reservePoolSize, poolMode, maxDbConnections, maxDbClientConnections, serverLifetime, connectQuery, loadBalanceHosts, startupParams,
    },
  };
}

/** Parse one `[users]` value. */
export function parseUserDef(name: string, text: string): Parsed<UserDef> {
  const problems: string[] = [];
  const params = splitConnstr(text, problems);
  let poolMode: PoolMode | null = null;
  let poolSize: number | null = null;
  let reservePoolSize: number | null = null;
  let maxUserConnections: number | null = null;
  let maxUserClientConnections: number | null = null;
  let queryTimeout: number | null = null;
  let idleTransactionTimeout: number | null = null;
  let transactionTimeout: number | null = null;
  let clientIdleTimeout: number | null = null;

  for (const p of params) {
    switch (p.key) {
      case 'pool_mode': poolMode = readPoolMode(p, problems); break;
      case 'pool_size': poolSize = readCount(p, problems); break;
      case 'reserve_pool_size': reservePoolSize = readCount(p, problems); break;
      case 'max_user_connections': maxUserConnections = readCount(p, problems); break;
      case 'query_timeout': queryTimeout = readSeconds(p, problems); break;
      case 'idle_transaction_timeout': idleTransactionTimeout = readSeconds(p, problems); break;
      case 'client_idle_timeout': clientIdleTimeout = readSeconds(p, problems); break;
      case 'max_user_client_connections': maxUserClientConnections = readCount(p, problems); break;
      case 'transaction_timeout': transactionTimeout = readSeconds(p, problems); break;
      default:
        problems.push(`unrecognized user parameter '${p.key}'`);
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    value: { name, poolMode, poolSize, reservePoolSize, maxUserConnections, maxUserClientConnections, queryTimeout, idleTransactionTimeout, transactionTimeout, clientIdleTimeout },
  };
}

/** Parse one `[peers]` value; `name` is the entry's key, the peer id (1..65535, as PgBouncer reads
 * it). Only host (required), port and pool_size are known, as in PgBouncer. */
export function parsePeerDef(name: string, text: string): Parsed<PeerDef> {
  const problems: string[] = [];
  const id = /^\d+$/.test(name) ? Number(name) : 0;
  if (id < 1 || id > 65535) problems.push(`a peer id must be a number from 1 to 65535`);
  const params = splitConnstr(text, problems);
  let host: string | null = null;
  let port = 6432;
  let poolSize: number | null = null;
  for (const p of params) {
    switch (p.key) {
      case 'host': host = p.value === '' ? null : p.value; break;
      case 'port': port = readPort(p, problems) ?? port; break;
      case 'pool_size': poolSize = readCount(p, problems); break;
      default:
        problems.push(`unrecognized peer parameter '${p.key}'`);
    }
  }
  if (host === null) problems.push(`host is required (where to forward cancel requests for peer ${name})`);
  if (problems.length > 0 || host === null) return { ok: false, problems };
  return { ok: true, value: { id, host, port, poolSize } };
}
