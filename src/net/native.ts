// The optional native addon native/peercred, and the one place that loads it. Node's net cannot
// read a unix socket's peer credentials, give glibc's heap back, set a socket option before
// bind(), set the TCP options PgBouncer tunes, or open a unix datagram socket (syslog); the addon
// does those, one small C function each (see peercred.c).
//
// Without it (no C toolchain at install, or an image built with --ignore-scripts) the pooler runs,
// and each feature that needs it says so with the fix: peer logins are refused, so_reuseport is a
// startup error. A build older than this code (a function missing) is reported the same way.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PeerCred {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** What the addon exports. A feature that needs a new native call adds it here and in peercred.c. */
export interface NativeAddon {
  peercred(fd: number): PeerCred;
  trim(): boolean;
  /** A TCP socket bound to a numeric address (SO_REUSEADDR, and SO_REUSEPORT when asked), not yet
   * listening: for server.listen({ fd }). */
  tcpBind(address: string, port: number, reusePort: boolean): number;
  /** PgBouncer's tune_socket on a connected TCP socket (see peercred.c); throws naming the option. */
  tcpTune(fd: number, keepalive: boolean, keepidle: number, keepintvl: number, keepcnt: number, userTimeoutMs: number): void;
  /** TCP_DEFER_ACCEPT and the socket buffers (0 = leave them) of a listening socket, which the
   * sockets it accepts inherit. */
  listenTune(fd: number, deferAccept: boolean, socketBuffer: number): void;
  /** A TCP socket not yet connected, with its buffers set (0 = leave them): for net.Socket({ fd }). */
  tcpSocket(ipv6: boolean, socketBuffer: number): number;
  /** A non-blocking unix datagram socket connected to `path` (syslog). */
  dgramConnect(path: string): number;
  /** One datagram; false when the reader's queue was full and it was dropped. */
  dgramSend(fd: number, data: Buffer): boolean;
  /** CLOCK_MONOTONIC in milliseconds modulo 2^30: a small integer, no allocation (clock.ts). */
  monotonicMs(): number;
  /** listen() on a socket from tcpBind and accept on a thread of the addon: each connection's
   * descriptor (or -errno when accept failed) reaches onAccept on the event loop, at most
   * maxQueue waiting for it (Linux only). The handle is for acceptStop, once; `realtime`: the
   * thread got real-time priority, and the socket then wants no TCP_DEFER_ACCEPT (peercred.c). */
  acceptStart(fd: number, backlog: number, maxQueue: number, onAccept: (fd: number) => void): { handle: AcceptHandle; realtime: boolean };
  /** Stop that thread and close the listening socket; the descriptors accepted but not yet
   * handed to onAccept are returned, the caller's to serve or close. */
  acceptStop(handle: AcceptHandle): number[];
}

/** An accept thread of the addon (opaque). */
export type AcceptHandle = { readonly __acceptHandle: unique symbol };

/** dist/src/net/native.js → <root>/native/peercred/build/Release/peercred.node */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const ADDON_PATH = path.join(ROOT, 'native/peercred/build/Release/peercred.node');
const BUILD_HINT = `build it with "npm run build:native" in ${ROOT} (it needs make, a C compiler and python3)`;

/** undefined: not tried yet; null: could not be loaded (`loadError` says why). */
let loaded: Partial<NativeAddon> | null | undefined;
let loadError = '';
/** The addon's trim(), once loaded; null without it. */
let trim: (() => boolean) | null = null;

function load(): Partial<NativeAddon> | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = createRequire(import.meta.url)(ADDON_PATH) as Partial<NativeAddon>;
    // Kept as loaded: the janitor's trim must not allocate on its first call either.
    trim = typeof loaded.trim === 'function' ? loaded.trim : null;
  } catch (err) {
    loaded = null;
    loadError =
      (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' ? 'was not built' : `could not be loaded (${(err as Error).message})`;
  }
  return loaded;
}

/**
 * The addon's function `name`, or why it is missing, worded for `purpose` ("peer authentication
 * is unavailable", "so_reuseport = 1 cannot be used") with the fix.
 */
export function nativeFunction<K extends keyof NativeAddon>(name: K, purpose: string): { fn: NativeAddon[K] } | { error: string } {
  const a = load();
  const fn = a?.[name];
  if (typeof fn === 'function') return { fn: fn.bind(a) as NativeAddon[K] };
  const why = a === null ? loadError : `is older than this pgpool-ts (it has no ${name}())`;
  return { error: `${purpose} because the native addon ${why}; ${BUILD_HINT}` };
}

/** The addon's monotonicMs, unbound (it is called per socket read), or null without it. */
export function monotonicMs(): (() => number) | null {
  const fn = load()?.monotonicMs;
  return typeof fn === 'function' ? fn : null;
}

/**
 * Give the memory of closed connections back to the system (glibc malloc_trim, see the addon).
 * False when nothing was released, off glibc, or without the addon (the pooler then keeps its
 * high-water RSS).
 */
export function trimHeap(): boolean {
  load();
  return trim?.() ?? false;
}
