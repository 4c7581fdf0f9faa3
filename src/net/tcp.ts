// PgBouncer's TCP settings on every TCP socket, towards clients and towards PostgreSQL alike
// (PgBouncer's tune_socket): tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt,
// tcp_user_timeout and tcp_socket_buffer; and tcp_defer_accept on the listening sockets.
//
// tcp_socket_buffer is set before the handshake, never on an open connection: shrinking a receive
// buffer below the window already offered stalls the connection (see peercred.c). Client sockets
// inherit it from the listening socket; a server connection gets a socket made with it
// (sizedSocket).
//
// Node sets only SO_KEEPALIVE and the idle time, so the rest goes through the native addon. Without
// it, keepalive and tcp_keepidle still apply through Node, and each other setting that asks for
// something is named once at startup (tcpSettingsWithoutEffect) rather than silently dropped.
import net from 'node:net';
import type { Config } from '../config/types.js';
import { log } from '../log.js';
import { nativeFunction } from './native.js';

const PURPOSE = 'the setting has no effect';

/** The OS descriptor of a socket or server (public on Unix, not typed). */
export function fdOf(handleOwner: net.Socket | net.Server): number {
  const fd = (handleOwner as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** Failures already logged, so a setting this system refuses is said once, not per connection. */
const told = new Set<string>();

function warnOnce(message: string): void {
  if (told.has(message)) return;
  told.add(message);
  log().warn(message);
}

/** Apply the TCP settings to a connected TCP socket (a client's or a server's, before any TLS). */
export function tuneSocket(socket: net.Socket, cfg: Config): void {
  const tune = nativeFunction('tcpTune', PURPOSE);
  const fd = fdOf(socket);
  if ('error' in tune || fd < 0) {
    socket.setKeepAlive(cfg.tcpKeepalive, cfg.tcpKeepidle * 1000);
    return;
  }
  try {
    tune.fn(fd, cfg.tcpKeepalive, cfg.tcpKeepidle, cfg.tcpKeepintvl, cfg.tcpKeepcnt, cfg.tcpUserTimeout);
  } catch (err) {
    // As PgBouncer: the connection goes on with the options that could be set.
    warnOnce(`TCP settings not applied: ${(err as Error).message}`);
  }
}

/** tcp_defer_accept and tcp_socket_buffer on a listening TCP socket (at start and on every
 * reload; a buffer size once set stays until a restart, the kernel having no "unset").
 * `defer` false: a real-time accept thread takes the socket's connections, and the kernel's
 * deferring would only cost SYNs (listener.ts). */
export function tuneListener(fd: number, cfg: Config, defer: boolean): void {
  const tune = nativeFunction('listenTune', PURPOSE);
  if ('error' in tune || fd < 0) return;
  try {
    tune.fn(fd, cfg.tcpDeferAccept && defer, cfg.tcpSocketBuffer);
  } catch (err) {
    warnOnce(`tcp_defer_accept / tcp_socket_buffer not applied: ${(err as Error).message}`);
  }
}

/** A socket for a server connection to an address of `family` (4 or 6) with tcp_socket_buffer
 * already set, or null when there is none to set or no addon (a plain socket then). */
export function sizedSocket(family: number, cfg: Config): net.Socket | null {
  if (cfg.tcpSocketBuffer === 0) return null;
  const make = nativeFunction('tcpSocket', PURPOSE);
  if ('error' in make) return null;
  try {
    return new net.Socket({ fd: make.fn(family === 6, cfg.tcpSocketBuffer) });
  } catch (err) {
    warnOnce(`tcp_socket_buffer not applied: ${(err as Error).message}`);
    return null;
  }
}

/** The settings that ask for something Node cannot do without the addon, one line each. */
export function tcpSettingsWithoutEffect(cfg: Config): string[] {
  const tune = nativeFunction('tcpTune', PURPOSE);
  if ('fn' in tune) return [];
  const asked: [string, number][] = [
    ['tcp_keepintvl', cfg.tcpKeepintvl],
    ['tcp_keepcnt', cfg.tcpKeepcnt],
    ['tcp_user_timeout', cfg.tcpUserTimeout],
    ['tcp_socket_buffer', cfg.tcpSocketBuffer],
  ];
  return asked.filter(([, v]) => v > 0).map(([name, v]) => `${name} = ${v}: ${tune.error}`);
}
