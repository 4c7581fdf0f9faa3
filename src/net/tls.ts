// TLS towards PostgreSQL: SSLRequest, then a TLS handshake whose checks follow libpq's sslmode.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { TlsSide } from '../config/types.js';

export interface ServerTlsInfo {
  readonly version: string;
  readonly cipher: string;
}

export type ServerTlsResult =
  | { socket: tls.TLSSocket; info: ServerTlsInfo }
  /** The server refused TLS and the mode allows plain text. */
  | { socket: null }
  | { error: string };

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/** One SecureContext per config generation: a reload builds a new TlsSide object. */
const contexts = new WeakMap<TlsSide, tls.SecureContext>();

function secureContext(side: TlsSide): tls.SecureContext {
  let ctx = contexts.get(side);
  if (ctx === undefined) {
    const read = (f: string | null) => (f !== null && f !== 'system' ? fs.readFileSync(f) : undefined);
    ctx = tls.createSecureContext({
      ca: side.caFile === 'system' ? tls.rootCertificates.slice() : read(side.caFile),
      cert: read(side.certFile),
      key: read(side.keyFile),
      crl: read(side.crlFile),
      minVersion: 'TLSv1.2',
    });
    contexts.set(side, ctx);
  }
  return ctx;
}

/**
 * Ask the server for TLS on a connected socket and run the handshake. Resolves with the TLS
 * socket, with `{socket: null}` when the server said no and plain text is allowed, or an error
 * that names the TLS reason.
 */
export function connectServerTls(sock: net.Socket, side: TlsSide, host: string): Promise<ServerTlsResult> {
  return new Promise((resolve) => {
    const fail = (error: string) => {
      sock.destroy();
      resolve({ error });
    };
    sock.once('error', (err) => fail(`could not connect to server: ${err.message}`));
    sock.once('data', (answer: Buffer) => {
      sock.removeAllListeners('error');
      if (answer.length !== 1) return fail('server sent unexpected data after the SSL request answer');
      if (answer[0] === 0x4e /* N */) {
        if (side.sslmode === 'prefer' || side.sslmode === 'allow') return resolve({ socket: null });
        return fail('server refused SSL');
      }
      if (answer[0] !== 0x53 /* S */) return fail('server sent an invalid answer to the SSL request');
      const verify = side.sslmode === 'verify-ca' || side.sslmode === 'verify-full' || (side.sslmode === 'require' && side.caFile !== null);
      const checkHost = side.sslmode === 'verify-full' || side.caFile === 'system';
      const t = tls.connect({
        socket: sock,
        secureContext: secureContext(side),
        rejectUnauthorized: verify,
        servername: checkHost && net.isIP(host) === 0 ? host : undefined,
        checkServerIdentity: checkHost ? (_h, cert) => tls.checkServerIdentity(host, cert) : () => undefined,
      });
      t.once('secureConnect', () => {
        t.removeAllListeners('error');
        resolve({ socket: t, info: { version: t.getProtocol() ?? '', cipher: t.getCipher()?.name ?? '' } });
      });
      t.once('error', (err) => fail(`TLS handshake with server failed: ${err.message}`));
    });
    sock.write(SSL_REQUEST);
  });
}
