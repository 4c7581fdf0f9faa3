// pgbouncer.ini → one validated, defaulted, deep-frozen Config. Every problem in the file (and in
// the files it includes, and in the auth_file) is collected and thrown as one ConfigError, so a
// failed start or RELOAD says everything that is wrong at once and changes nothing.
//
// The line-level pass is our own, because it must keep file and line for every setting, follow
// `%include` and let a repeated key win (tools append overrides), and `ini` collapses duplicates
// and forgets lines. `ini` does what it is good at: unquoting a quoted value (`ini.unsafe`).
// Its inline-comment stripping is NOT used: PgBouncer takes the rest of the line, `;` and `#`
// included, and `server_reset_query = RESET ALL; SET SESSION AUTHORIZATION DEFAULT` is a classic
// that must not be cut. [databases]/[users] values are left to connstr.ts, which has its own quoting.

import { accessSync, constants as fsConstants, readFileSync, realpathSync } from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import ini from 'ini';
import { parseAuthFile } from './auth-file.js';
import { parseDatabaseDef, parsePeerDef, parseUserDef, quoteConnstrValue } from './connstr.js';
import type { AuthEntry, AuthType, Config, ConfigProblem, DatabaseDef, LogFormat, PeerDef, PoolMode, SslMode, UserDef } from './types.js';

export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** `FILE:LINE: setting: what is wrong`; line 0 (no line: a default, or the file itself) and an
 * empty setting are left out rather than printed as noise. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.line > 0 ? `${p.file}:${p.line}` : p.file;
  return p.setting === '' ? `${where}: ${p.message}` : `${where}: ${p.setting}: ${p.message}`;
}

// ---------------------------------------------------------------------------------------------
// Setting table: one row per [pgbouncer] setting drives parsing, defaults, "did you mean",
// SHOW CONFIG and the environment mapping, so none of them can forget a setting.

type Value = number | boolean | string | null | readonly string[];

type Kind =
  | { readonly type: 'int'; readonly min: number; readonly max: number }
  /** Seconds as a float, as PgBouncer's time settings. */
  | { readonly type: 'time' }
  | { readonly type: 'bool' }
  /** `empty` replaces an empty value where '' would mean nothing useful (a cipher list). */
  | { readonly type: 'str'; readonly empty?: string }
  /** '' → null. */
  | { readonly type: 'optstr' }
  /** A path: '' → null, `~/` expanded as PgBouncer does; `check` = must exist and be readable. */
  | { readonly type: 'file'; readonly check: boolean }
  | { readonly type: 'list' }
  /** Case-insensitive. `off` is what an empty value means, if anything; `unsupported` are real
   * PgBouncer values that pgpool-ts refuses with a clear reason. */
  | { readonly type: 'enum'; readonly values: readonly string[]; readonly off?: string; readonly unsupported?: readonly string[] }
  /** A Unix file mode, always read as octal (PgBouncer's strtol would read `777` as decimal). */
  | { readonly type: 'mode' }
  /** OpenSSL-style protocol list, as libusual's tls_config_parse_protocols accepts it. */
  | { readonly type: 'protocols' }
  /** A process count, or `auto`: one per CPU. */
  | { readonly type: 'workers' };

interface Setting {
  readonly name: string;
  readonly kind: Kind;
  /** The default as ini text; parsed like any value, so the default column of SHOW CONFIG and
   * the defaulted Config field cannot disagree. */
  readonly def: string;
  /** False for PgBouncer's CF_NO_RELOAD settings (SHOW CONFIG `changeable`). */
  readonly reload: boolean;
  /** Where the value lives in Config; null = accepted but not acted on (Config.otherSettings). */
  readonly get: ((c: Config) => Value) | null;
  /** Why pgpool-ts does not act on it (get is null): a value other than the default is named in a
   * warning at startup and on reload (settingsWithoutEffect). */
  readonly noEffect?: string;
}

const INT_MAX = 2147483647;
const MAX_WORKERS = 255;
const count = (min = 0, max = INT_MAX): Kind => ({ type: 'int', min, max });
const TIME: Kind = { type: 'time' };
const BOOL: Kind = { type: 'bool' };
const STR: Kind = { type: 'str' };
const OPTSTR: Kind = { type: 'optstr' };
const LIST: Kind = { type: 'list' };
const FILE_IN: Kind = { type: 'file', check: true };
const FILE_OUT: Kind = { type: 'file', check: false };
const PROTOCOLS: Kind = { type: 'protocols' };
const CIPHERS: Kind = { type: 'str', empty: 'default' };

const POOL_MODES: readonly PoolMode[] = ['session', 'transaction', 'statement'];
const AUTH_TYPES: readonly AuthType[] = ['trust', 'any', 'plain', 'md5', 'scram-sha-256', 'cert', 'hba'];
const SSL_MODES: readonly SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];
const SSLMODE: Kind = { type: 'enum', values: SSL_MODES, off: 'disable' };
const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];
const SYSLOG_FACILITIES = ['auth', 'authpriv', 'daemon', 'user', 'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7'];

const DEFAULT_AUTH_QUERY =
  'SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname=$1 AND rolcanlogin';

function setting(name: string, kind: Kind, def: string, get: ((c: Config) => Value) | null, reload = true): Setting {
  return { name, kind, def, reload, get };
}

/** A PgBouncer setting pgpool-ts validates (so an existing file loads) but does not act on, and why. */
function inert(name: string, kind: Kind, def: string, noEffect: string, reload = true): Setting {
  return { name, kind, def, reload, get: null, noEffect };
}

const WINDOWS_SERVICE = 'it names the Windows service, which pgpool-ts does not have (PgBouncer ignores it outside Windows too)';

const SETTINGS: readonly Setting[] = [
  // listening and process
  setting('listen_addr', LIST, '', (c) => c.listenAddr, false),
  setting('listen_port', count(1, 65535), '6432', (c) => c.listenPort, false),
  setting('listen_backlog', count(), '128', (c) => c.listenBacklog, false),
  setting('unix_socket_dir', STR, '/tmp', (c) => c.unixSocketDir, false),
  setting('unix_socket_mode', { type: 'mode' }, '0777', (c) => c.unixSocketMode, false),
  setting('unix_socket_group', OPTSTR, '', (c) => c.unixSocketGroup, false),
  setting('logfile', FILE_OUT, '', (c) => c.logfile),
  setting('pidfile', FILE_OUT, '', (c) => c.pidfile, false),
  setting('user', OPTSTR, '', (c) => c.user, false),
  setting('so_reuseport', BOOL, '0', (c) => c.soReuseport, false),
  // PgBouncer's range: the cancel key has 16 bits for it, and its docs cap it at 16383.
  setting('peer_id', count(0, 16383), '0', (c) => c.peerId),
  // auth
  setting('auth_type', { type: 'enum', values: AUTH_TYPES, unsupported: ['pam', 'ldap'] }, 'md5', (c) => c.authType),
  setting('auth_file', FILE_IN, '', (c) => c.authFile),
  setting('auth_hba_file', FILE_IN, '', (c) => c.authHbaFile),
  setting('auth_ident_file', FILE_IN, '', (c) => c.authIdentFile),
  setting('auth_user', OPTSTR, '', (c) => c.authUser),
  setting('auth_query', STR, DEFAULT_AUTH_QUERY, (c) => c.authQuery),
  setting('auth_dbname', OPTSTR, '', (c) => c.authDbname),
  // pooling and limits
  setting('pool_mode', { type: 'enum', values: POOL_MODES }, 'session', (c) => c.poolMode),
  setting('max_client_conn', count(1), '100', (c) => c.maxClientConn),
  setting('default_pool_size', count(), '20', (c) => c.defaultPoolSize),
  setting('min_pool_size', count(), '0', (c) => c.minPoolSize),
  setting('reserve_pool_size', count(), '0', (c) => c.reservePoolSize),
  setting('reserve_pool_timeout', TIME, '5', (c) => c.reservePoolTimeout),
  setting('max_db_connections', count(), '0', (c) => c.maxDbConnections),
  setting('max_user_connections', count(), '0', (c) => c.maxUserConnections),
  setting('max_db_client_connections', count(), '0', (c) => c.maxDbClientConnections),
  setting('max_user_client_connections', count(), '0', (c) => c.maxUserClientConnections),
  setting('server_round_robin', BOOL, '0', (c) => c.serverRoundRobin),
  // server connection lifecycle
  setting('server_reset_query', STR, 'DISCARD ALL', (c) => c.serverResetQuery),
  setting('server_reset_query_always', BOOL, '0', (c) => c.serverResetQueryAlways),
  setting('server_check_query', STR, '<empty>', (c) => c.serverCheckQuery),
  setting('server_check_delay', TIME, '30', (c) => c.serverCheckDelay),
  setting('server_lifetime', TIME, '3600', (c) => c.serverLifetime),
  setting('server_idle_timeout', TIME, '600', (c) => c.serverIdleTimeout),
  setting('server_connect_timeout', TIME, '15', (c) => c.serverConnectTimeout),
  setting('server_login_retry', TIME, '15', (c) => c.serverLoginRetry),
  setting('server_fast_close', BOOL, '0', (c) => c.serverFastClose),
  setting('dns_max_ttl', TIME, '15', (c) => c.dnsMaxTtl),
  setting('dns_nxdomain_ttl', TIME, '15', (c) => c.dnsNxdomainTtl),
  // timeouts
  setting('query_timeout', TIME, '0', (c) => c.queryTimeout),
  setting('query_wait_timeout', TIME, '120', (c) => c.queryWaitTimeout),
  setting('client_idle_timeout', TIME, '0', (c) => c.clientIdleTimeout),
  setting('client_login_timeout', TIME, '60', (c) => c.clientLoginTimeout),
  setting('idle_transaction_timeout', TIME, '0', (c) => c.idleTransactionTimeout),
  setting('transaction_timeout', TIME, '0', (c) => c.transactionTimeout),
  setting('query_wait_notify', TIME, '5', (c) => c.queryWaitNotify),
  setting('suspend_timeout', TIME, '10', (c) => c.suspendTimeout),
  setting('cancel_wait_timeout', TIME, '10', (c) => c.cancelWaitTimeout),
  // protocol
  setting('ignore_startup_parameters', LIST, '', (c) => c.ignoreStartupParameters),
  setting('track_extra_parameters', LIST, 'IntervalStyle', (c) => c.trackExtraParameters, false),
  setting('application_name_add_host', BOOL, '0', (c) => c.applicationNameAddHost),
  setting('max_packet_size', count(1), '2147483647', (c) => c.maxPacketSize),
  inert('pkt_buf', count(1), '4096', 'Node sizes its own read buffers; startup packets of up to 10000 bytes and messages of up to max_packet_size are read whatever it says', false),
  setting('max_prepared_statements', count(), '200', (c) => c.maxPreparedStatements),
  // network
  setting('tcp_keepalive', BOOL, '1', (c) => c.tcpKeepalive),
  setting('tcp_keepcnt', count(), '0', (c) => c.tcpKeepcnt),
  setting('tcp_keepidle', count(), '0', (c) => c.tcpKeepidle),
  setting('tcp_keepintvl', count(), '0', (c) => c.tcpKeepintvl),
  setting('tcp_user_timeout', count(), '0', (c) => c.tcpUserTimeout),
  setting('tcp_defer_accept', BOOL, '1', (c) => c.tcpDeferAccept),
  setting('tcp_socket_buffer', count(), '0', (c) => c.tcpSocketBuffer),
  // console, logging, stats
  setting('admin_users', LIST, '', (c) => c.adminUsers),
  setting('stats_users', LIST, '', (c) => c.statsUsers),
  setting('log_connections', BOOL, '1', (c) => c.logConnections),
  setting('log_disconnections', BOOL, '1', (c) => c.logDisconnections),
  setting('log_pooler_errors', BOOL, '1', (c) => c.logPoolerErrors),
  setting('log_stats', BOOL, '1', (c) => c.logStats),
  setting('stats_period', count(1), '60', (c) => c.statsPeriod),
  setting('verbose', count(), '0', (c) => c.verbose),
  // pgpool-ts only: PgBouncer's text lines, or JSON lines for log pipelines.
  setting('log_format', { type: 'enum', values: LOG_FORMATS }, 'text', (c) => c.logFormat, false),
  setting('syslog', BOOL, '0', (c) => c.syslog),
  setting('syslog_ident', STR, 'pgbouncer', (c) => c.syslogIdent),
  setting('syslog_facility', { type: 'enum', values: SYSLOG_FACILITIES }, 'daemon', (c) => c.syslogFacility),
  // pgpool-ts only: a container may mount the daemon's socket elsewhere.
  setting('syslog_socket', STR, '/dev/log', (c) => c.syslogSocket),
  // TLS towards clients
  setting('client_tls_sslmode', SSLMODE, 'disable', (c) => c.clientTls.sslmode),
  setting('client_tls_key_file', FILE_IN, '', (c) => c.clientTls.keyFile),
  setting('client_tls_cert_file', FILE_IN, '', (c) => c.clientTls.certFile),
  setting('client_tls_ca_file', FILE_IN, '', (c) => c.clientTls.caFile),
  setting('client_tls_crl_file', FILE_IN, '', (c) => c.clientTls.crlFile),
  setting('client_tls_protocols', PROTOCOLS, 'secure', (c) => c.clientTls.protocols),
  setting('client_tls_ciphers', CIPHERS, 'default', (c) => c.clientTls.ciphers),
  setting('client_tls13_ciphers', STR, '', (c) => c.clientTls.tls13Ciphers),
  setting('client_tls_ecdhcurve', { type: 'str', empty: 'none' }, 'auto', (c) => c.clientTls.ecdhCurve),
  setting('client_tls_dheparams', { type: 'enum', values: ['none', 'auto', 'legacy'], off: 'none' }, 'auto', (c) => c.clientTls.dheParams),
  // TLS towards PostgreSQL
  setting('server_tls_sslmode', SSLMODE, 'prefer', (c) => c.serverTls.sslmode),
  setting('server_tls_ca_file', FILE_IN, '', (c) => c.serverTls.caFile),
  setting('server_tls_key_file', FILE_IN, '', (c) => c.serverTls.keyFile),
  setting('server_tls_cert_file', FILE_IN, '', (c) => c.serverTls.certFile),
  setting('server_tls_crl_file', FILE_IN, '', (c) => c.serverTls.crlFile),
  setting('server_tls_protocols', PROTOCOLS, 'secure', (c) => c.serverTls.protocols),
  setting('server_tls_ciphers', CIPHERS, 'default', (c) => c.serverTls.ciphers),
  setting('server_tls13_ciphers', STR, '', (c) => c.serverTls.tls13Ciphers),
  // metrics (pgpool-ts only)
  // The HTTP listener is opened once at start, like the PostgreSQL ones.
  setting('metrics_listen_addr', STR, '127.0.0.1', (c) => c.metricsListenAddr, false),
  setting('metrics_port', count(0, 65535), '0', (c) => c.metricsPort, false),
  // Worker processes on the port (pgpool-ts only); a cancel key has one byte for the worker.
  setting('workers', { type: 'workers' }, '1', (c) => c.workers, false),
  setting('disable_pqexec', BOOL, '0', (c) => c.disablePqexec, false),
  setting('autodb_idle_timeout', TIME, '3600', (c) => c.autodbIdleTimeout),
  setting('scram_iterations', count(1), '4096', (c) => c.scramIterations),
  // Real PgBouncer settings that pgpool-ts accepts (so an existing file loads) but does not act on.
  inert('sbuf_loopcnt', count(), '5', 'Node reads each socket as its data comes; there is no read loop to bound'),
  inert('dns_zone_check_period', TIME, '0', 'zone serial checks need c-ares; host names are resolved with getaddrinfo and looked up again after dns_max_ttl'),
  inert('resolv_conf', STR, '', 'host names are resolved with the system resolver (getaddrinfo), which reads /etc/resolv.conf', false),
  inert('auth_ldap_options', STR, '', 'LDAP authentication is not supported'),
  inert('conffile', STR, '', 'RELOAD and SIGHUP always read the file given with -c'),
  inert('service_name', STR, 'pgbouncer', WINDOWS_SERVICE, false),
  inert('job_name', STR, 'pgbouncer', WINDOWS_SERVICE, false),
];

const SETTING_BY_NAME: ReadonlyMap<string, Setting> = new Map(SETTINGS.map((s) => [s.name, s]));

// ---------------------------------------------------------------------------------------------
// Values

type ParsedValue = { readonly ok: true; readonly value: Value } | { readonly ok: false; readonly message: string };

const BOOL_WORDS: Readonly<Record<string, boolean>> = {
  '1': true, yes: true, on: true, true: true,
  '0': false, no: false, off: false, false: false,
};

const TLS_PROTOCOL_WORDS = ['tlsv1', 'tlsv1.0', 'tlsv1.1', 'tlsv1.2', 'tlsv1.3', 'all', 'secure', 'default'];

function expected(kind: Kind): string {
  switch (kind.type) {
    case 'int':
      return kind.max >= INT_MAX ? `an integer >= ${kind.min}` : `an integer ${kind.min}..${kind.max}`;
    case 'time':
      return 'a number of seconds >= 0';
    case 'bool':
      return 'one of 0, 1, yes, no, on, off, true, false';
    case 'enum':
      return `one of ${kind.values.join(', ')}`;
    case 'mode':
      return 'an octal file mode such as 0777';
    case 'workers':
      return `auto or an integer 1..${MAX_WORKERS}`;
    case 'protocols':
      return `a comma- or colon-separated list of ${TLS_PROTOCOL_WORDS.join(', ')} (! negates)`;
    case 'str':
    case 'optstr':
    case 'file':
    case 'list':
      return 'a string';
  }
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? homedir() + path.slice(1) : path;
}

/** Text (already unquoted) → typed value. An empty text is the setting's "off"/empty. */
function parseValue(kind: Kind, text: string): ParsedValue {
  const bad = (): ParsedValue => ({ ok: false, message: `invalid value '${text}' (expected ${expected(kind)})` });
  switch (kind.type) {
    case 'int': {
      if (text === '') return kind.min <= 0 ? { ok: true, value: 0 } : { ok: false, message: `needs a value (expected ${expected(kind)})` };
      if (!/^[+-]?\d+$/.test(text)) return bad();
      const n = Number(text);
      return n >= kind.min && n <= kind.max ? { ok: true, value: n } : bad();
    }
    case 'time':
      if (text === '') return { ok: true, value: 0 };
      return /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? { ok: true, value: Number(text) } : bad();
    case 'bool': {
      if (text === '') return { ok: true, value: false };
      const b = BOOL_WORDS[text.toLowerCase()];
      return b === undefined ? bad() : { ok: true, value: b };
    }
    case 'str':
      return { ok: true, value: text === '' && kind.empty !== undefined ? kind.empty : text };
    case 'optstr':
      return { ok: true, value: text === '' ? null : text };
    case 'file':
      return { ok: true, value: text === '' ? null : expandHome(text) };
    case 'list':
      return { ok: true, value: text.split(',').map((s) => s.trim()).filter((s) => s !== '') };
    case 'enum': {
      const v = text.toLowerCase();
      if (v === '' && kind.off !== undefined) return { ok: true, value: kind.off };
      if (kind.values.includes(v)) return { ok: true, value: v };
      if (kind.unsupported?.includes(v)) {
        return { ok: false, message: `'${text}' is not supported by pgpool-ts (expected ${expected(kind)})` };
      }
      return text === '' ? { ok: false, message: `needs a value (expected ${expected(kind)})` } : bad();
    }
    case 'mode':
      return /^0?[0-7]{3}$/.test(text) ? { ok: true, value: parseInt(text, 8) } : bad();
    case 'workers': {
      if (text === '') return { ok: true, value: 1 };
      if (text.toLowerCase() === 'auto') return { ok: true, value: Math.min(MAX_WORKERS, availableParallelism()) };
      const n = /^\d+$/.test(text) ? Number(text) : 0;
      return n >= 1 && n <= MAX_WORKERS ? { ok: true, value: n } : bad();
    }
    case 'protocols': {
      if (text === '') return { ok: true, value: 'secure' };
      const words = text.split(/[\s,:]+/).filter((w) => w !== '');
      if (words.some((w) => w.replace(/^!/, '').toLowerCase() === 'legacy')) {
        return { ok: false, message: `'legacy' is not accepted (PgBouncer rejects it too; expected ${expected(kind)})` };
      }
      return words.every((w) => TLS_PROTOCOL_WORDS.includes(w.replace(/^!/, '').toLowerCase())) ? { ok: true, value: text } : bad();
    }
  }
}

/** A value as PgBouncer's SHOW CONFIG prints it: booleans as 0/1, times as %g, modes in octal. */
function showValue(kind: Kind, v: Value): string {
  if (v === null) return '';
  if (typeof v === 'boolean') return v ? '1' : '0';
  if (typeof v === 'number') return kind.type === 'mode' ? `0${v.toString(8).padStart(3, '0')}` : String(v);
  if (typeof v === 'string') return v;
  return v.join(',');
}

// ---------------------------------------------------------------------------------------------
// Line-level pass

const SECTIONS = ['pgbouncer', 'databases', 'users', 'peers'] as const;
type Section = (typeof SECTIONS)[number];

interface Entry {
  readonly file: string;
  readonly line: number;
  /** As written (a [databases] name keeps its case; [pgbouncer] keys are matched lower-cased). */
  readonly key: string;
  /** The rest of the line after '=', trimmed, not yet unquoted. */
  readonly raw: string;
}

interface Collected {
  /** Per section, the winning entry per key: a later line replaces an earlier one. */
  readonly sections: Record<Section, Map<string, Entry>>;
  readonly problems: ConfigProblem[];
}

/** The key part of `key = value`: a `"quoted name"` (with `""` for `"`), as PgBouncer allows for
 * database names, or a bare run of the characters PgBouncer's ini parser takes in a key. */
function splitKeyValue(text: string): { key: string; raw: string } | null {
  let key: string;
  let rest: string;
  if (text.startsWith('"')) {
    let i = 1;
    key = '';
    for (;;) {
      const c = text[i];
      if (c === undefined) return null;
      if (c === '"' && text[i + 1] === '"') {
        key += '"';
        i += 2;
      } else if (c === '"') {
        break;
      } else {
        key += c;
        i++;
      }
    }
    rest = text.slice(i + 1);
  } else {
    const m = /^[A-Za-z0-9_.*-]+/.exec(text);
    if (m === null) return null;
    key = m[0];
    rest = text.slice(key.length);
  }
  const eq = /^[ \t]*=/.exec(rest);
  if (eq === null || key === '') return null;
  return { key, raw: rest.slice(eq[0].length).trim() };
}

/** Where `%include path` points: PgBouncer resolves a relative path against the working
 * directory; a file next to the including one is tried second, which is what people expect. */
function resolveInclude(path: string, includer: string): string[] {
  if (isAbsolute(path)) return [path];
  return [path, join(dirname(includer), path)];
}

/** A [pgbouncer] value as written → its text: a value wholly in "double" or 'single' quotes is
 * unquoted (so `unix_socket_dir = ""` is empty and `"a "` keeps its blank); anything else is
 * taken as it stands, as PgBouncer does. */
function unquote(raw: string): string {
  const q = raw[0];
  return raw.length >= 2 && (q === '"' || q === "'") && raw.endsWith(q) ? ini.unsafe(raw) : raw;
}

/** The inverse of unquote, for generated ini: JSON quotes (which ini.unsafe parses back) only
 * where the bare text would not survive. */
function quoteValue(value: string): string {
  return value !== value.trim() || unquote(value) !== value ? JSON.stringify(value) : value;
}

function readable(path: string): boolean {
  try {
    accessSync(path, fsConstants.R_OK);
    return true;
  } catch {
    return false;
  }
}

function collect(text: string, file: string, out: Collected, state: { section: Section | null; ignoring: boolean }, chain: readonly string[]): void {
  const lines = text.split(/\r?\n/);
  lines.forEach((rawLine, index) => {
    const line = index + 1;
    const problem = (setting: string, message: string): void => {
      out.problems.push({ file, line, setting, message });
    };
    const body = rawLine.trim();
    if (body === '' || body.startsWith(';') || body.startsWith('#')) return;

    const include = /^%include(?:[ \t]+(.*))?$/.exec(body);
    if (include !== null) {
      const target = unquote((include[1] ?? '').trim());
      if (target === '') {
        problem('%include', 'needs a file name');
        return;
      }
      const candidates = resolveInclude(target, file);
      const found = candidates.find(readable);
      if (found === undefined) {
        problem('%include', `cannot read '${target}' (tried ${candidates.map((c) => resolve(c)).join(' and ')})`);
        return;
      }
      let real: string;
      let included: string;
      try {
        real = realpathSync(found);
        included = readFileSync(found, 'utf8');
      } catch (err) {
        problem('%include', `cannot read '${found}': ${(err as Error).message}`);
        return;
      }
      if (chain.includes(real)) {
        problem('%include', `include loop: ${[...chain, real].join(' -> ')}`);
        return;
      }
      collect(included, found, out, state, [...chain, real]);
      return;
    }

    if (body.startsWith('[')) {
      const m = /^\[([^\]]*)\]\s*(?:[;#].*)?$/.exec(body);
      if (m === null) {
        problem('', `syntax error in section header '${body}'`);
        return;
      }
      const name = (m[1] ?? '').trim().toLowerCase();
      const known = SECTIONS.find((s) => s === name);
      if (known === undefined) {
        problem('', `unknown section [${name}] (expected [pgbouncer], [databases], [users] or [peers])`);
        // Its keys are not reported one by one: the header already says what is wrong.
        state.section = null;
        state.ignoring = true;
        return;
      }
      state.section = known;
      state.ignoring = false;
      return;
    }

    const kv = splitKeyValue(body);
    if (kv === null) {
      problem('', `syntax error (expected "key = value", "[section]" or "%include file")`);
      return;
    }
    if (state.ignoring) return;
    if (state.section === null) {
      problem(kv.key, 'setting outside of any section (expected [pgbouncer] before it)');
      return;
    }
    const map = out.sections[state.section];
    const mapKey = state.section === 'pgbouncer' ? kv.key.toLowerCase() : kv.key;
    // delete first so the map's order (used for [databases]) follows the winning line.
    map.delete(mapKey);
    map.set(mapKey, { file, line, key: kv.key, raw: kv.raw });
  });
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function suggest(key: string): string | null {
  let best: string | null = null;
  let bestDistance = 4;
  for (const s of SETTINGS) {
    const d = levenshtein(key, s.name);
    if (d < bestDistance) {
      best = s.name;
      bestDistance = d;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Building the Config

interface Built {
  readonly config: Config;
  readonly problems: readonly ConfigProblem[];
}

/** Turn collected sections into a Config, adding every problem found on the way. */
function build(collected: Collected, mainFile: string, configFile: string | null, deferTls: boolean): Built {
  const problems = collected.problems;
  const values = new Map<string, Value>();
  const where = new Map<string, Entry>();

  for (const [key, entry] of collected.sections.pgbouncer) {
    const s = SETTING_BY_NAME.get(key);
    if (s === undefined) {
      const guess = suggest(key);
      problems.push({ file: entry.file, line: entry.line, setting: entry.key, message: guess === null ? 'unknown setting' : `unknown setting (did you mean ${guess}?)` });
      continue;
    }
    const parsed = parseValue(s.kind, unquote(entry.raw));
    if (parsed.ok) {
      values.set(s.name, parsed.value);
      where.set(s.name, entry);
    } else {
      problems.push({ file: entry.file, line: entry.line, setting: s.name, message: parsed.message });
    }
  }
  for (const s of SETTINGS) {
    if (values.has(s.name)) continue;
    const parsed = parseValue(s.kind, s.def);
    if (!parsed.ok) throw new Error(`bug: default of ${s.name} does not parse: ${parsed.message}`);
    values.set(s.name, parsed.value);
  }

  // Typed reads; a wrong type here is a bug in the table, not in the user's file.
  const value = (name: string): Value => {
    const v = values.get(name);
    if (v === undefined) throw new Error(`bug: no value for ${name}`);
    return v;
  };
  const num = (name: string): number => {
    const v = value(name);
    if (typeof v !== 'number') throw new Error(`bug: ${name} is not a number`);
    return v;
  };
  const bool = (name: string): boolean => {
    const v = value(name);
    if (typeof v !== 'boolean') throw new Error(`bug: ${name} is not a boolean`);
    return v;
  };
  const str = (name: string): string => {
    const v = value(name);
    if (typeof v !== 'string') throw new Error(`bug: ${name} is not a string`);
    return v;
  };
  const opt = (name: string): string | null => {
    const v = value(name);
    if (v !== null && typeof v !== 'string') throw new Error(`bug: ${name} is not a string`);
    return v;
  };
  const list = (name: string): readonly string[] => {
    const v = value(name);
    if (!Array.isArray(v)) throw new Error(`bug: ${name} is not a list`);
    return v as readonly string[];
  };
  function oneOf<T extends string>(name: string, allowed: readonly T[]): T {
    const v = str(name);
    const found = allowed.find((a) => a === v);
    if (found === undefined) throw new Error(`bug: ${name} = ${v}`);
    return found;
  }

  // Cross-checks point at the line of the setting that asks for the missing piece; a setting
  // left at its default has no line and is reported against the main file.
  const at = (name: string, message: string): void => {
    const e = where.get(name);
    problems.push({ file: e?.file ?? mainFile, line: e?.line ?? 0, setting: name, message });
  };

  for (const s of SETTINGS) {
    const path = values.get(s.name);
    if (s.kind.type !== 'file' || !s.kind.check || typeof path !== 'string') continue;
    // 'system' asks for the system CA store rather than naming a file (server side).
    if (s.name === 'server_tls_ca_file' && path === 'system') continue;
    if (!readable(path)) at(s.name, `cannot read '${path}'`);
  }

  if (list('listen_addr').length === 0 && str('unix_socket_dir') === '') {
    at(where.has('unix_socket_dir') ? 'unix_socket_dir' : 'listen_addr', 'nothing to listen on: listen_addr is empty and unix_socket_dir is disabled');
  }

  const clientMode = oneOf('client_tls_sslmode', SSL_MODES);
  if (!deferTls) {
    const client = { sslmode: clientMode, keyFile: opt('client_tls_key_file'), certFile: opt('client_tls_cert_file'), caFile: opt('client_tls_ca_file') };
    const server = { keyFile: opt('server_tls_key_file'), certFile: opt('server_tls_cert_file') };
    for (const p of tlsSettingProblems(client, server)) at(p.setting, p.message);
  }
  const authType = oneOf('auth_type', AUTH_TYPES);
  if (authType === 'cert') {
    if (clientMode !== 'verify-full') at('auth_type', `'cert' needs client_tls_sslmode=verify-full (it is ${clientMode})`);
    if (opt('client_tls_ca_file') === null) at('auth_type', `'cert' needs client_tls_ca_file`);
  }
  if (authType === 'hba' && opt('auth_hba_file') === null) at('auth_type', `'hba' needs auth_hba_file`);

  let authEntries: ReadonlyMap<string, AuthEntry> = new Map();
  const authFile = opt('auth_file');
  if (authFile !== null && readable(authFile)) {
    // Access rights are not everything: a directory, say, passes readable() and fails here.
    let text: string | null = null;
    try {
      text = readFileSync(authFile, 'utf8');
    } catch (err) {
      at('auth_file', `cannot read '${authFile}': ${(err as Error).message}`);
    }
    if (text !== null) {
      const parsed = parseAuthFile(text, authFile);
      problems.push(...parsed.problems);
      authEntries = parsed.entries;
    }
  }

  const databases = new Map<string, DatabaseDef>();
  for (const [name, entry] of collected.sections.databases) {
    if (name === 'pgbouncer') {
      problems.push({ file: entry.file, line: entry.line, setting: name, message: 'the name pgbouncer is reserved for the admin console' });
      continue;
    }
    const parsed = parseDatabaseDef(name, entry.raw);
    if (parsed.ok) databases.set(name, parsed.value);
    else for (const message of parsed.problems) problems.push({ file: entry.file, line: entry.line, setting: name, message });
  }
  const users = new Map<string, UserDef>();
  for (const [name, entry] of collected.sections.users) {
    const parsed = parseUserDef(name, entry.raw);
    if (parsed.ok) users.set(name, parsed.value);
    else for (const message of parsed.problems) problems.push({ file: entry.file, line: entry.line, setting: name, message });
  }

  const peers = new Map<number, PeerDef>();
  for (const [name, entry] of collected.sections.peers) {
    const parsed = parsePeerDef(name, entry.raw);
    if (parsed.ok) peers.set(parsed.value.id, parsed.value);
    else for (const message of parsed.problems) problems.push({ file: entry.file, line: entry.line, setting: `[peers] ${name}`, message });
  }

  const otherSettings = new Map<string, string>();
  for (const s of SETTINGS) if (s.get === null) otherSettings.set(s.name, showValue(s.kind, value(s.name)));

  const config: Config = {
    configFile,
    listenAddr: list('listen_addr'),
    listenPort: num('listen_port'),
    listenBacklog: num('listen_backlog'),
    unixSocketDir: str('unix_socket_dir'),
    unixSocketMode: num('unix_socket_mode'),
    unixSocketGroup: opt('unix_socket_group'),
    logfile: opt('logfile'),
    pidfile: opt('pidfile'),
    user: opt('user'),
    soReuseport: bool('so_reuseport'),
    peerId: num('peer_id'),
    peers,
    authType,
    authFile,
    authHbaFile: opt('auth_hba_file'),
    authIdentFile: opt('auth_ident_file'),
    authUser: opt('auth_user'),
    authQuery: str('auth_query'),
    authDbname: opt('auth_dbname'),
    authEntries,
    poolMode: oneOf('pool_mode', POOL_MODES),
    maxClientConn: num('max_client_conn'),
    defaultPoolSize: num('default_pool_size'),
    minPoolSize: num('min_pool_size'),
    reservePoolSize: num('reserve_pool_size'),
    reservePoolTimeout: num('reserve_pool_timeout'),
    maxDbConnections: num('max_db_connections'),
    maxUserConnections: num('max_user_connections'),
    maxDbClientConnections: num('max_db_client_connections'),
    maxUserClientConnections: num('max_user_client_connections'),
    serverRoundRobin: bool('server_round_robin'),
    serverResetQuery: str('server_reset_query'),
    serverResetQueryAlways: bool('server_reset_query_always'),
    serverCheckQuery: str('server_check_query'),
    serverCheckDelay: num('server_check_delay'),
    serverLifetime: num('server_lifetime'),
    serverIdleTimeout: num('server_idle_timeout'),
    serverConnectTimeout: num('server_connect_timeout'),
    serverLoginRetry: num('server_login_retry'),
    serverFastClose: bool('server_fast_close'),
    dnsMaxTtl: num('dns_max_ttl'),
    dnsNxdomainTtl: num('dns_nxdomain_ttl'),
    queryTimeout: num('query_timeout'),
    queryWaitTimeout: num('query_wait_timeout'),
    clientIdleTimeout: num('client_idle_timeout'),
    clientLoginTimeout: num('client_login_timeout'),
    idleTransactionTimeout: num('idle_transaction_timeout'),
    transactionTimeout: num('transaction_timeout'),
    queryWaitNotify: num('query_wait_notify'),
    suspendTimeout: num('suspend_timeout'),
    cancelWaitTimeout: num('cancel_wait_timeout'),
    autodbIdleTimeout: num('autodb_idle_timeout'),
    disablePqexec: bool('disable_pqexec'),
    scramIterations: num('scram_iterations'),
    ignoreStartupParameters: list('ignore_startup_parameters'),
    trackExtraParameters: list('track_extra_parameters'),
    applicationNameAddHost: bool('application_name_add_host'),
    maxPacketSize: num('max_packet_size'),
    maxPreparedStatements: num('max_prepared_statements'),
    tcpKeepalive: bool('tcp_keepalive'),
    tcpKeepcnt: num('tcp_keepcnt'),
    tcpKeepidle: num('tcp_keepidle'),
    tcpKeepintvl: num('tcp_keepintvl'),
    tcpUserTimeout: num('tcp_user_timeout'),
    tcpDeferAccept: bool('tcp_defer_accept'),
    tcpSocketBuffer: num('tcp_socket_buffer'),
    adminUsers: list('admin_users'),
    statsUsers: list('stats_users'),
    logConnections: bool('log_connections'),
    logDisconnections: bool('log_disconnections'),
    logPoolerErrors: bool('log_pooler_errors'),
    logStats: bool('log_stats'),
    statsPeriod: num('stats_period'),
    verbose: num('verbose'),
    logFormat: oneOf('log_format', LOG_FORMATS),
    syslog: bool('syslog'),
    syslogIdent: str('syslog_ident'),
    syslogFacility: str('syslog_facility'),
    syslogSocket: str('syslog_socket'),
    clientTls: {
      sslmode: clientMode,
      keyFile: opt('client_tls_key_file'),
      certFile: opt('client_tls_cert_file'),
      caFile: opt('client_tls_ca_file'),
      crlFile: opt('client_tls_crl_file'),
      protocols: str('client_tls_protocols'),
      ciphers: str('client_tls_ciphers'),
      tls13Ciphers: str('client_tls13_ciphers'),
      ecdhCurve: str('client_tls_ecdhcurve'),
      dheParams: str('client_tls_dheparams'),
    },
    serverTls: {
      sslmode: oneOf('server_tls_sslmode', SSL_MODES),
      keyFile: opt('server_tls_key_file'),
      certFile: opt('server_tls_cert_file'),
      caFile: opt('server_tls_ca_file'),
      crlFile: opt('server_tls_crl_file'),
      protocols: str('server_tls_protocols'),
      ciphers: str('server_tls_ciphers'),
      tls13Ciphers: str('server_tls13_ciphers'),
    },
    metricsListenAddr: str('metrics_listen_addr'),
    metricsPort: num('metrics_port'),
    workers: num('workers'),
    databases,
    users,
    otherSettings,
  };
  return { config, problems };
}

/** Freeze an object graph, Maps included: their entries are frozen and the Map object itself
 * (its `set` still works, but the Config type only hands out ReadonlyMap). */
function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value;
  if (value instanceof Map) {
    for (const [k, v] of value) {
      deepFreeze(k);
      deepFreeze(v);
    }
  } else {
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return Object.freeze(value);
}

function emptyCollected(): Collected {
  return { sections: { pgbouncer: new Map(), databases: new Map(), users: new Map(), peers: new Map() }, problems: [] };
}

function finish(collected: Collected, mainFile: string, configFile: string | null, deferTls = false): Config {
  const { config, problems } = build(collected, mainFile, configFile, deferTls);
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(config);
}

/** Where problems in `overrides` are reported (the admin console's SET). */
export const OVERRIDE_FILE = 'SET';

/** Read, validate and default a pgbouncer.ini; throws ConfigError listing every problem.
 * `overrides` ([pgbouncer] key → value, from the console's SET) win over the file's lines. With
 * `deferTls`, settings that must come in pairs (a key and its certificate) are left for the TLS
 * setup to check, so SET can give them one at a time, as PgBouncer allows. */
export function loadConfig(file: string, overrides: ReadonlyMap<string, string> = new Map(), opts: { deferTls?: boolean } = {}): Config {
  let text: string;
  let real: string;
  try {
    text = readFileSync(file, 'utf8');
    real = realpathSync(file);
  } catch (err) {
    throw new ConfigError([{ file, line: 0, setting: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  const collected = emptyCollected();
  collect(text, file, collected, { section: null, ignoring: false }, [real]);
  for (const [key, value] of overrides) {
    collected.sections.pgbouncer.set(key.toLowerCase(), { file: OVERRIDE_FILE, line: 0, key, raw: quoteValue(value) });
  }
  return finish(collected, file, resolve(file), opts.deferTls);
}

/** TLS settings that only work together: what is missing, against the setting that needs it. */
export function tlsSettingProblems(
  client: { readonly sslmode: SslMode; readonly keyFile: string | null; readonly certFile: string | null; readonly caFile: string | null },
  server: { readonly keyFile: string | null; readonly certFile: string | null },
): { setting: string; message: string }[] {
  const out: { setting: string; message: string }[] = [];
  const mode = client.sslmode;
  if (mode !== 'disable') {
    if (client.keyFile === null) out.push({ setting: 'client_tls_sslmode', message: `'${mode}' needs client_tls_key_file` });
    if (client.certFile === null) out.push({ setting: 'client_tls_sslmode', message: `'${mode}' needs client_tls_cert_file` });
  }
  if ((mode === 'verify-ca' || mode === 'verify-full') && client.caFile === null) {
    out.push({ setting: 'client_tls_sslmode', message: `'${mode}' needs client_tls_ca_file to verify client certificates` });
  }
  if ((server.keyFile === null) !== (server.certFile === null)) {
    out.push({ setting: server.keyFile === null ? 'server_tls_cert_file' : 'server_tls_key_file', message: 'server_tls_key_file and server_tls_cert_file go together' });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reporting

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** One line for `--check`, e.g. `pgbouncer.ini: OK (3 databases, 2 users, auth_type=md5, …)`. */
export function describeConfig(c: Config): string {
  const name = c.configFile === null ? '(environment)' : basename(c.configFile);
  const listen: string[] = c.listenAddr.map((a) => (a.includes(':') ? `[${a}]:${c.listenPort}` : `${a}:${c.listenPort}`));
  if (c.unixSocketDir !== '') listen.push(`${c.unixSocketDir}/.s.PGSQL.${c.listenPort}`);
  const parts = [
    plural(c.databases.size, 'database'),
    plural(c.users.size, 'user'),
    `auth_type=${c.authType}`,
    ...(c.authFile === null ? [] : [`${c.authEntries.size} auth_file ${c.authEntries.size === 1 ? 'entry' : 'entries'}`]),
    `pool_mode=${c.poolMode}`,
    `listen ${listen.join(', ')}`,
    ...(c.peerId > 0 || c.peers.size > 0 ? [`peer_id=${c.peerId} of ${plural(c.peers.size, 'peer')}`] : []),
  ];
  return `${name}: OK (${parts.join(', ')})`;
}

/** Values pgpool-ts takes but cannot honour as PgBouncer does, and what it does instead. */
const VALUE_CAVEATS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  client_tls_dheparams: { legacy: "works as auto: OpenSSL 3 refuses PgBouncer's 1024-bit DH group" },
};

/** A warning for each setting pgpool-ts does not act on that is set to something else than its
 * default (`pkt_buf = 8192 has no effect: …`), and for each value it honours otherwise. */
export function settingsWithoutEffect(c: Config): string[] {
  return settingRows(c).flatMap((r) => {
    const why = SETTING_BY_NAME.get(r.key)?.noEffect;
    if (why !== undefined && r.value !== r.default) return [`${r.key} = ${r.value} has no effect: ${why}`];
    const caveat = VALUE_CAVEATS[r.key]?.[r.value];
    return caveat === undefined ? [] : [`${r.key} = ${r.value} ${caveat}`];
  });
}

export interface SettingRow {
  readonly key: string;
  readonly value: string;
  readonly default: string;
  readonly changeable: boolean;
}

/** Every [pgbouncer] setting, alphabetical, printed as PgBouncer's SHOW CONFIG prints it. */
export function settingRows(c: Config): SettingRow[] {
  return [...SETTINGS]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((s) => {
      const def = parseValue(s.kind, s.def);
      const defShown = def.ok ? showValue(s.kind, def.value) : s.def;
      const value = s.get === null ? (c.otherSettings.get(s.name) ?? defShown) : showValue(s.kind, s.get(c));
      return { key: s.name, value, default: defShown, changeable: s.reload };
    });
}

// ---------------------------------------------------------------------------------------------
// Containers: configuration from environment variables

const ENV_FILE = '<environment>';
const PASSWORD_MASK = '********';

interface EnvIni {
  readonly text: string;
  /** The same text with passwords masked, line for line, for printing. */
  readonly shown: string;
  /** The server login, which also becomes the one auth_file-less client login. */
  readonly login: AuthEntry | null;
}

function envProblem(setting: string, message: string): ConfigError {
  return new ConfigError([{ file: ENV_FILE, line: 0, setting, message }]);
}

/** A [databases] name as ini text: bare if PgBouncer would take it bare, else `"quoted"`. */
function iniName(name: string): string {
  return /^[A-Za-z0-9_.*-]+$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

function buildEnvIni(env: NodeJS.ProcessEnv): EnvIni | null {
  // Every variable is read through here: one value must not be able to add lines (a section, an
  // %include) to the generated ini.
  const get = (name: string): string => {
    const value = env[name] ?? '';
    if (/[\r\n]/.test(value)) throw envProblem(name, 'value contains a line break');
    return value;
  };
  const url = get('DATABASE_URL');
  if (url === '' && get('DB_HOST') === '') return null;

  let host = '';
  let port = '';
  let user = '';
  let password = '';
  let dbname = '';
  const params: [string, string][] = [];
  let urlSslmode: string | null = null;
  if (url !== '') {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw envProblem('DATABASE_URL', 'not a valid URL (expected postgres://user:password@host:port/dbname)');
    }
    if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
      throw envProblem('DATABASE_URL', `unsupported scheme '${u.protocol}' (expected postgres: or postgresql:)`);
    }
    try {
      host = decodeURIComponent(u.hostname).replace(/^\[(.*)\]$/, '$1');
      port = u.port;
      user = decodeURIComponent(u.username);
      password = decodeURIComponent(u.password);
      dbname = decodeURIComponent(u.pathname.replace(/^\//, ''));
    } catch {
      throw envProblem('DATABASE_URL', 'bad %-escape');
    }
    for (const [k, v] of u.searchParams) {
      // sslmode is a libpq URL parameter with no connstr key in PgBouncer: it is the
      // server_tls_sslmode setting. Any other parameter goes to the connstr and is validated there.
      if (k === 'sslmode') urlSslmode = v;
      else params.push([k, v]);
    }
  }
  host = get('DB_HOST') || host;
  port = get('DB_PORT') || port;
  user = get('DB_USER') || user;
  password = get('DB_PASSWORD') || password;
  dbname = get('DB_NAME') || dbname;

  const pgbouncer: [string, string][] = [];
  for (const s of SETTINGS) {
    const upper = s.name.toUpperCase();
    // Bare USER is the login name every shell sets, never a request to switch users.
    const name = env[`PGBOUNCER_${upper}`] !== undefined || s.name === 'user' ? `PGBOUNCER_${upper}` : upper;
    if (env[name] !== undefined) pgbouncer.push([s.name, get(name)]);
  }
  if (!pgbouncer.some(([k]) => k === 'listen_addr')) pgbouncer.push(['listen_addr', '0.0.0.0']);
  if (urlSslmode !== null && !pgbouncer.some(([k]) => k === 'server_tls_sslmode')) pgbouncer.push(['server_tls_sslmode', urlSslmode]);

  const conn: [string, string][] = [['host', host]];
  if (port !== '') conn.push(['port', port]);
  if (dbname !== '') conn.push(['dbname', dbname]);
  if (user !== '') conn.push(['user', user]);
  conn.push(...params);
  const connText = (mask: boolean): string =>
    [...conn, ...(password === '' ? [] : [['password', mask ? PASSWORD_MASK : password] as const])]
      .map(([k, v]) => `${k}=${quoteConnstrValue(v)}`)
      .join(' ');

  const render = (mask: boolean): string =>
    [
      `; generated by pgpool-ts from environment variables${mask ? ' (passwords masked)' : ''}`,
      '[pgbouncer]',
      ...pgbouncer.map(([k, v]) => `${k} = ${quoteValue(v)}`),
      '',
      '[databases]',
      `${iniName(dbname === '' ? '*' : dbname)} = ${connText(mask)}`,
      '',
    ].join('\n');

  return { text: render(false), shown: render(true), login: user === '' ? null : { user, secret: password } };
}

/** The ini text configFromEnv would parse (passwords masked, same lines), or null when neither
 * DATABASE_URL nor DB_HOST is set. Throws ConfigError for an unusable variable. */
export function generatedIniFromEnv(env: NodeJS.ProcessEnv): string | null {
  return buildEnvIni(env)?.shown ?? null;
}

/** A Config for containers, from DATABASE_URL or DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME plus
 * any [pgbouncer] setting as PGBOUNCER_<NAME> or <NAME>; null when neither DATABASE_URL nor
 * DB_HOST is set. The generated ini goes through the same checks as a file; problems name
 * `<environment>:LINE` of the text generatedIniFromEnv shows. Without an auth_file, clients log
 * in with the server login's own user and password. */
export function configFromEnv(env: NodeJS.ProcessEnv): Config | null {
  const generated = buildEnvIni(env);
  if (generated === null) return null;
  const collected = emptyCollected();
  collect(generated.text, ENV_FILE, collected, { section: null, ignoring: false }, []);
  const config = finish(collected, ENV_FILE, null);
  if (config.authFile !== null || generated.login === null) return config;
  return deepFreeze({ ...config, authEntries: new Map([[generated.login.user, generated.login]]) });
}
