// Statistics kept as plain numbers outside the pools' own `stats`: duration distributions per
// database and the reload outcomes. The pool and the app only add to them; SHOW and the
// Prometheus collector read them when asked. Imports nothing, so any layer may write here.

/** Bucket upper bounds in seconds, 100 µs to 1 min: a pooled query or wait spans that range. */
const DURATION_BOUNDS: readonly number[] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60];

/** A histogram as plain numbers: one counter per bound (not cumulative; readers sum), plus the
 * overflow above the last bound, the sum and the count. */
export class Buckets {
  /** counts[i] = observations in (bounds[i-1], bounds[i]]; counts[bounds.length] = above all. */
  readonly counts: number[];
  /** Sum of the observations, in milliseconds. */
  private sumMs = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** One duration, in milliseconds. The pool passes differences of the cached clock, which are
   * small integers: a fractional number of seconds would be boxed (16 bytes) at every call, three
   * times per transaction. */
  observe(ms: number): void {
    let i = 0;
    while (i < this.bounds.length && ms > this.bounds[i]! * 1000) i++;
    this.counts[i]!++;
    this.sumMs += ms;
    this.count++;
  }

  /** Sum of the observations, in seconds. */
  get sum(): number {
    return this.sumMs / 1000;
  }
}

/** The duration distributions of one database (the name clients connect to). */
export interface DbTimings {
  /** How long a client waited for a server (cl_waiting → linked). */
  readonly wait: Buckets;
  /** From a query sent to the ReadyForQuery that answers it. */
  readonly query: Buckets;
  /** From the first query of a transaction to the ReadyForQuery that ends it. */
  readonly xact: Buckets;
}

const byDatabase = new Map<string, DbTimings>();

export function timings(db: string): DbTimings {
  let t = byDatabase.get(db);
  if (t === undefined) {
    t = { wait: new Buckets(DURATION_BOUNDS), query: new Buckets(DURATION_BOUNDS), xact: new Buckets(DURATION_BOUNDS) };
    byDatabase.set(db, t);
  }
  return t;
}

export function allTimings(): ReadonlyMap<string, DbTimings> {
  return byDatabase;
}

/** Outcomes of configuration reloads (SIGHUP, RELOAD, SET), since start. */
export const reloads = { ok: 0, failed: 0 };

// ---------------------------------------------------------------------------------------------
// Client logins and client TLS handshakes, since start.

/** Why a login was refused (a fixed set, so the Prometheus label stays small). */
export const LOGIN_REFUSALS = [
  'password', 'hba', 'cert', 'peer', 'tls', 'not_allowed', 'max_client_conn', 'client_limit', 'database', 'timeout', 'protocol', 'shutdown', 'server', 'other',
] as const;
export type LoginRefusal = (typeof LOGIN_REFUSALS)[number];

/** Why a client TLS handshake failed, from OpenSSL's or the socket's error code. */
export const TLS_FAILURES = ['protocol_version', 'no_shared_cipher', 'certificate', 'alpn', 'closed', 'not_tls', 'other'] as const;
export type TlsFailure = (typeof TLS_FAILURES)[number];

const zeros = <K extends string>(keys: readonly K[]): Record<K, number> =>
  Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;

export const loginStats = {
  /** From accept to authentication done, split by whether the client used TLS. */
  durationTls: new Buckets(DURATION_BOUNDS),
  durationPlain: new Buckets(DURATION_BOUNDS),
  refusedBy: zeros(LOGIN_REFUSALS),

  loggedIn(tls: boolean, ms: number): void {
    (tls ? this.durationTls : this.durationPlain).observe(ms);
  },
  refused(reason: LoginRefusal): void {
    this.refusedBy[reason]++;
  },
};

export const tlsStats = {
  /** From the first TLS byte (or the 'S' answer) to the handshake's end, successful ones only. */
  handshake: new Buckets(DURATION_BOUNDS),
  failedBy: zeros(TLS_FAILURES),
};
