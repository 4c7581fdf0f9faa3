// PgBouncer's `host=` of a [databases] or [peers] entry as a socket address: a value starting with
// '/' is a directory holding the unix socket .s.PGSQL.<port>; anything else a host name or address.
import path from 'node:path';

export type SocketAddress = { readonly unix: string } | { readonly host: string; readonly port: number };

export function socketAddress(host: string, port: number): SocketAddress {
  return host.startsWith('/') ? { unix: path.join(host, `.s.PGSQL.${port}`) } : { host, port };
}

export function addressText(a: SocketAddress): string {
  return 'unix' in a ? a.unix : `${a.host}:${a.port}`;
}
