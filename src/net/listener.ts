// Listening sockets: TCP on each listen_addr with listen_backlog (shared with other processes
// through SO_REUSEPORT when so_reuseport = 1), the unix socket unix_socket_dir/.s.PGSQL.<port>
// with unix_socket_mode and unix_socket_group, and the address [peers] gives for our own peer_id
// when that is none of those.
//
// A draining pooler (SHUTDOWN WAIT_FOR_*, SIGTERM, SIGINT) stops taking new clients, but keeps the
// listeners its peers forward cancel requests to until it exits, so a cancel for a query still
// running on it lands: the unix socket (also the console's), its own [peers] address, and the TCP
// port when that is its [peers] address and not shared with so_reuseport (a port shared with
// newer processes must close, or the kernel keeps handing it new clients).
//
// A TCP port is accepted on by a thread of the native addon where it has one (Linux): the thread
// takes each connection off the kernel's queue as it arrives, so a storm of logins meeting an event
// loop busy with TLS handshakes finds the queue of listen_backlog empty instead of full, its SYNs
// dropped and retried a second later (peercred.c has the details, docs/benchmarks.md the storm it
// was measured in). The thread runs at real-time priority where the process may ask for it (root,
// CAP_SYS_NICE): only then does it keep up with a burst of connects, and tcp_defer_accept is then
// left to it (the kernel's deferring would drop SYNs of the burst); the client's first bytes are
// waited for on the loop, as for every socket. Without the addon, or with PGPOOL_ACCEPT=node,
// Node's server accepts when its loop turns, as it always did.
import { execFileSync } from 'node:child_process';
import dns from 'node:dns/promises';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import util from 'node:util';
import type { Config } from '../config/types.js';
import { log, sockAddr } from '../log.js';
import { socketAddress } from './address.js';
import { nativeFunction, type AcceptHandle, type NativeAddon } from './native.js';
import { fdOf, tuneListener } from './tcp.js';

/** `keep`: the listener stays open while the pooler drains (see the header). */
export type OnConnection = (socket: net.Socket, isUnix: boolean, keep: boolean) => void;

export interface Listeners {
  /** Where we listen, for the startup log line. */
  readonly addresses: readonly string[];
  readonly unixPath: string | null;
  /** Stop accepting (exit); open connections are not touched. */
  close(): Promise<void>;
  /** Stop accepting new clients: close every listener but those kept while draining. */
  drain(): void;
  /** Apply tcp_defer_accept of a reloaded config to the TCP listeners. */
  retune(cfg: Config): void;
}

/** Node 22.12+ and 23.1+ set SO_REUSEPORT themselves (listen's `reusePort`). */
const NODE_REUSEPORT = ((): boolean => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
})();

const REUSEPORT_PURPOSE = 'so_reuseport = 1 cannot be used';

/** Why this config cannot start here (so_reuseport, or workers, without a way to set
 * SO_REUSEPORT), naming the setting; or null. */
export function listenerProblem(cfg: Config): { setting: string; message: string } | null {
  if ((!cfg.soReuseport && cfg.workers <= 1) || NODE_REUSEPORT) return null;
  const [setting, purpose] = cfg.soReuseport
    ? ['so_reuseport', REUSEPORT_PURPOSE]
    : ['workers', `workers = ${cfg.workers} cannot be used (the workers share the port with SO_REUSEPORT)`];
  const bind = nativeFunction('tcpBind', purpose);
  return 'error' in bind ? { setting, message: bind.error } : null;
}

/**
 * Our own [peers] entry when it needs a listener of its own, or keeps the TCP port open while
 * draining: `extra` = an address we would not listen on otherwise; `keepTcp` = it is the TCP port.
 */
function ownPeerListener(cfg: Config, unixPath: string | null): { extra: { unix: string } | { port: number } | null; keepTcp: boolean } {
  const own = cfg.peerId > 0 ? cfg.peers.get(cfg.peerId) : undefined;
  if (own === undefined) return { extra: null, keepTcp: false };
  const a = socketAddress(own.host, own.port);
  if ('unix' in a) return { extra: a.unix === unixPath ? null : a, keepTcp: false };
  if (a.port !== cfg.listenPort) return { extra: { port: a.port }, keepTcp: false };
  return { extra: null, keepTcp: !cfg.soReuseport };
}

function listenOne(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

/** A socket bound by the addon to `addr`:`port` (SO_REUSEPORT when asked), not yet listening. */
async function bindTcp(bind: NativeAddon['tcpBind'], addr: string, port: number, reusePort: boolean): Promise<number> {
  // '*' is every address: IPv6 dual-stack, or IPv4 where there is no IPv6; a name is its first
  // address, as Node's listen() resolves one.
  const candidates = addr === '*' ? ['::', '0.0.0.0'] : [net.isIP(addr) !== 0 ? addr : (await dns.lookup(addr)).address];
  for (const [i, a] of candidates.entries()) {
    try {
      return bind(a, port, reusePort);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (i === candidates.length - 1 || (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL')) throw err;
    }
  }
  throw new Error(`no address to bind for ${addr}`);
}

/** Listen on TCP `addr`:`port` with Node's server. The addon binds the socket where there is
 * one: so_reuseport needs it (before Node 22.12), and tcp_defer_accept and tcp_socket_buffer are
 * then set before listen(), so the first connections get them too. */
async function listenTcp(server: net.Server, cfg: Config, addr: string, port: number, reusePort: boolean): Promise<void> {
  const host = addr === '*' ? undefined : addr;
  const backlog = cfg.listenBacklog;
  const bind = nativeFunction('tcpBind', REUSEPORT_PURPOSE);
  if ('error' in bind) {
    if (!reusePort) return listenOne(server, { host, port, backlog });
    if (NODE_REUSEPORT) return listenOne(server, { host, port, backlog, reusePort: true } as net.ListenOptions);
    throw new Error(bind.error);
  }
  const fd = await bindTcp(bind.fn, addr, port, reusePort);
  try {
    tuneListener(fd, cfg, true);
    await listenOne(server, { fd, backlog } as net.ListenOptions);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** One listening socket: Node's server, or a TCP port the addon's accept thread accepts on. */
interface Listening {
  readonly keep: boolean;
  /** Still accepting. */
  readonly open: boolean;
  /** The descriptor of a TCP listening socket (tcp_defer_accept, tcp_socket_buffer); -1 for unix. */
  readonly tcpFd: number;
  /** tcp_defer_accept applies: not under a real-time accept thread (the header says why). */
  readonly defer: boolean;
  close(): Promise<void>;
}

function serverListening(server: net.Server, keep: boolean, tcp: boolean): Listening {
  return {
    keep,
    get open() {
      return server.listening;
    },
    get tcpFd() {
      return tcp ? fdOf(server) : -1;
    },
    defer: true,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** The addon's accept thread, or null (no addon, not Linux, or PGPOOL_ACCEPT=node). */
function acceptThread(): { start: NativeAddon['acceptStart']; stop: NativeAddon['acceptStop']; bind: NativeAddon['tcpBind'] } | null {
  if (process.env.PGPOOL_ACCEPT === 'node') return null;
  const purpose = 'the accept thread is not used';
  const start = nativeFunction('acceptStart', purpose);
  const stop = nativeFunction('acceptStop', purpose);
  const bind = nativeFunction('tcpBind', purpose);
  if ('error' in start || 'error' in stop || 'error' in bind) {
    const why = 'error' in start ? start.error : 'error' in stop ? stop.error : 'error' in bind ? bind.error : '';
    log().debug(`accepting on the event loop: ${why}`);
    return null;
  }
  return { start: start.fn, stop: stop.fn, bind: bind.fn };
}

/** Said once per process: every listener's thread asks for the same priority. */
let warnedNotRealtime = false;

/**
 * Listen on TCP `addr`:`port` with an accept thread: each connection it takes becomes a
 * net.Socket here, as Node's server would have made it. The thread's queue is capped at
 * max_client_conn (listen_backlog if larger), the number of clients the pooler takes anyway.
 */
async function listenTcpThread(
  accept: NonNullable<ReturnType<typeof acceptThread>>,
  cfg: Config,
  addr: string,
  port: number,
  reusePort: boolean,
  keep: boolean,
  onSocket: (socket: net.Socket) => void,
): Promise<Listening> {
  const fd = await bindTcp(accept.bind, addr, port, reusePort);
  // Before listen(), as in listenTcp; the thread's priority, which decides tcp_defer_accept, is
  // known only once it runs, so a real-time one turns the deferring off below.
  tuneListener(fd, cfg, true);
  const onAccept = (c: number): void => {
    if (c < 0) {
      // Out of descriptors, mostly: the thread waits a second before it tries again.
      const [name, message] = util.getSystemErrorMap().get(c) ?? [`E${-c}`, 'unknown error'];
      log().error(`accept() failed: ${message} (${name})`);
      return;
    }
    // Never throws: an exception would stop the addon handing on the rest of this wake-up's.
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd: c, readable: true, writable: true });
    } catch (err) {
      fs.closeSync(c);
      log().error(`accept() failed: ${(err as Error).message}`);
      return;
    }
    socket.setNoDelay(true);
    onSocket(socket);
  };
  let started: ReturnType<typeof accept.start>;
  try {
    started = accept.start(fd, cfg.listenBacklog, Math.max(cfg.maxClientConn, cfg.listenBacklog, 1), onAccept);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  // An addon built before the thread's priority returns the bare handle (an external: no keys).
  const { handle, realtime } = 'handle' in started ? started : { handle: started as unknown as AcceptHandle, realtime: false };
  if (realtime) tuneListener(fd, cfg, false);
  else if (!warnedNotRealtime) {
    warnedNotRealtime = true;
    log().info('accept thread at normal priority (real-time priority needs root or CAP_SYS_NICE): a burst of connections can overflow listen_backlog');
  }
  let open = true;
  return {
    keep,
    get open() {
      return open;
    },
    get tcpFd() {
      return open ? fd : -1;
    },
    defer: !realtime,
    close: () => {
      // Connections the thread accepted before the close are served, as Node's server hands on
      // those it accepted: they finished their TCP handshake while we were listening.
      if (open) for (const c of accept.stop(handle)) onAccept(c);
      open = false;
      return Promise.resolve();
    },
  };
}

/** How a process of a multi-worker instance listens (cluster/): a worker shares the TCP port with
 * its siblings and has a unix socket of its own; the main process has the instance's unix socket
 * (and [peers] address) and hands each connection to a worker without reading from it. */
export interface ListenRole {
  readonly tcp: boolean;
  readonly reusePort: boolean;
  /** The directory of the unix socket, instead of unix_socket_dir. */
  readonly unixDir: string;
  /** Also listen at our own [peers] address when it is none of the above. */
  readonly ownPeer: boolean;
  readonly pauseOnConnect: boolean;
}

export async function openListeners(cfg: Config, onConnection: OnConnection, role: ListenRole | null = null): Promise<Listeners> {
  const listening: Listening[] = [];
  const addresses: string[] = [];
  const unixPaths: string[] = [];
  const unixDir = role?.unixDir ?? cfg.unixSocketDir;
  const unixPath = unixDir === '' ? null : path.join(unixDir, `.s.PGSQL.${cfg.listenPort}`);
  const own = role?.ownPeer === false ? { extra: null, keepTcp: ownPeerListener(cfg, unixPath).keepTcp } : ownPeerListener(cfg, unixPath);
  const pauseOnConnect = role?.pauseOnConnect ?? false;
  const accept = acceptThread();

  const tcp = async (addr: string, port: number, keep: boolean, reusePort: boolean): Promise<void> => {
    let l: Listening;
    // The thread's sockets start reading at once; a process that hands connections on unread
    // (pauseOnConnect) listens through Node.
    if (accept !== null && !pauseOnConnect) {
      l = await listenTcpThread(accept, cfg, addr, port, reusePort, keep, (s) => onConnection(s, false, keep));
    } else {
      const server = net.createServer({ noDelay: true, pauseOnConnect }, (s) => onConnection(s, false, keep));
      await listenTcp(server, cfg, addr, port, reusePort);
      l = serverListening(server, keep, true);
    }
    listening.push(l);
    addresses.push(sockAddr(addr, port));
  };
  const unix = async (p: string): Promise<void> => {
    await removeStaleSocket(p);
    const server = net.createServer({ pauseOnConnect }, (s) => onConnection(s, true, true));
    await listenOne(server, { path: p, backlog: cfg.listenBacklog });
    listening.push(serverListening(server, true, false));
    unixPaths.push(p);
    fs.chmodSync(p, cfg.unixSocketMode);
    if (cfg.unixSocketGroup !== null) execFileSync('chgrp', [cfg.unixSocketGroup, p]);
    addresses.push(`unix:${p}`);
  };

  try {
    // The unix socket before TCP: whoever waits for the TCP port to answer (a readiness probe, a
    // test harness) may then use the unix socket at once. The other way round, a connection to it
    // could come between the two and find no socket file yet.
    if (unixPath !== null) await unix(unixPath);
    if (role?.tcp !== false) for (const addr of cfg.listenAddr) await tcp(addr, cfg.listenPort, own.keepTcp, role?.reusePort ?? cfg.soReuseport);
    if (own.extra !== null) {
      if ('unix' in own.extra) await unix(own.extra.unix);
      else if (role?.tcp !== false) for (const addr of cfg.listenAddr) await tcp(addr, own.extra.port, true, false);
    }
  } catch (err) {
    for (const l of listening) void l.close();
    for (const p of unixPaths) fs.rmSync(p, { force: true });
    throw err;
  }
  return {
    addresses,
    unixPath,
    close: async () => {
      await Promise.all(listening.map((l) => l.close()));
      for (const p of unixPaths) fs.rmSync(p, { force: true });
    },
    drain: () => {
      for (const l of listening) if (!l.keep && l.open) void l.close();
    },
    retune: (next) => {
      for (const l of listening) if (l.open && l.tcpFd >= 0) tuneListener(l.tcpFd, next, l.defer);
    },
  };
}

/** A socket file left by a crashed pooler would make listen() fail; one that answers is in use
 * by another process and must not be taken. */
function removeStaleSocket(p: string): Promise<void> {
  if (!fs.existsSync(p)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = net.connect({ path: p });
    probe.once('connect', () => {
      probe.destroy();
      reject(new Error(`unix socket ${p} is in use by another process`));
    });
    probe.once('error', () => {
      fs.rmSync(p, { force: true });
      resolve();
    });
  });
}
