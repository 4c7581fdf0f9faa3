// Host names of server connections, resolved once and kept (PgBouncer's DNS cache): a name is
// looked up again only after dns_max_ttl, a name that does not resolve only after
// dns_nxdomain_ttl. Lookups of one name in flight at once share a single getaddrinfo. The cache
// hands Node's net.connect its `lookup`, so Node still races the addresses of both families
// (autoSelectFamily) as it does for a name it resolves itself.
import dns from 'node:dns';
import type { LookupAddress, LookupAllOptions, LookupOneOptions } from 'node:dns';
import type net from 'node:net';

interface Entry {
  /** Addresses, or the lookup's error. */
  readonly addrs: LookupAddress[] | NodeJS.ErrnoException;
  /** When the entry was made (ms since the epoch) and how long it stays (ms). */
  readonly at: number;
  readonly ttlMs: number;
}

const cache = new Map<string, Entry>();
const inFlight = new Map<string, Promise<Entry>>();

/** getaddrinfo error codes that mean the name does not resolve (as opposed to a socket error). */
const DNS_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EAI_NODATA', 'ENODATA', 'ESERVFAIL', 'ETIMEOUT']);

/** Whether a connect error came from resolving the host name. */
export function isDnsError(err: NodeJS.ErrnoException): boolean {
  return err.syscall === 'getaddrinfo' || (err.code !== undefined && DNS_ERRORS.has(err.code));
}

function resolve(host: string, maxTtlMs: number, nxTtlMs: number): Promise<Entry> {
  const pending = inFlight.get(host);
  if (pending !== undefined) return pending;
  const p = new Promise<Entry>((done) => {
    dns.lookup(host, { all: true }, (err, addrs) => {
      done({ addrs: err ?? addrs, at: Date.now(), ttlMs: err !== null ? nxTtlMs : maxTtlMs });
    });
  }).then((entry) => {
    inFlight.delete(host);
    if (entry.ttlMs > 0) cache.set(host, entry);
    else cache.delete(host);
    return entry;
  });
  inFlight.set(host, p);
  return p;
}

type Callback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A `lookup` for net.connect that answers from the cache (ttls in seconds, 0 = no caching). */
export function cachedLookup(maxTtl: number, nxdomainTtl: number): net.LookupFunction {
  const lookup = (host: string, options: LookupOneOptions | LookupAllOptions, callback: Callback): void => {
    const answer = (entry: Entry): void => {
      if (!Array.isArray(entry.addrs)) return callback(entry.addrs, '');
      const wanted = options.family === 4 || options.family === 6 ? entry.addrs.filter((a) => a.family === options.family) : entry.addrs;
      const first = wanted[0];
      if (first === undefined) {
        const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${host}`);
        err.code = 'ENOTFOUND';
        err.syscall = 'getaddrinfo';
        return callback(err, '');
      }
      if (options.all === true) callback(null, wanted);
      else callback(null, first.address, first.family);
    };
    const hit = cache.get(host);
    if (hit !== undefined && Date.now() - hit.at < hit.ttlMs) return answer(hit);
    void resolve(host, maxTtl * 1000, nxdomainTtl * 1000).then(answer);
  };
  return lookup as net.LookupFunction;
}

export interface DnsHost {
  readonly hostname: string;
  /** Seconds until the entry expires. */
  readonly ttl: number;
  /** The addresses, or empty for a name that did not resolve: as PgBouncer prints a resolver's
   * sockaddr (`127.0.0.1:0`, `[::1]:0`; a name is looked up without a port). */
  readonly addrs: readonly string[];
}

/** The live cache entries (SHOW DNS_HOSTS); expired ones are dropped on the way. */
export function dnsHosts(): DnsHost[] {
  const now = Date.now();
  const out: DnsHost[] = [];
  for (const [hostname, e] of cache) {
    const left = e.at + e.ttlMs - now;
    if (left <= 0) {
      cache.delete(hostname);
      continue;
    }
    out.push({ hostname, ttl: Math.ceil(left / 1000), addrs: Array.isArray(e.addrs) ? e.addrs.map((a) => (a.family === 6 ? `[${a.address}]:0` : `${a.address}:0`)) : [] });
  }
  return out;
}

/** Lookups in progress (SHOW LISTS dns_pending). */
export function dnsPending(): number {
  return inFlight.size;
}
