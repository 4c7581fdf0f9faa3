// TLS on both sides of the pooler.
//
// Contexts are built once per config generation (startup and each RELOAD), validated before they
// are used: a broken file on RELOAD keeps the old contexts, and connections already open keep the
// context they were made with. Client side: the pooler is the TLS server, after an SSLRequest or
// directly (PostgreSQL 17 direct TLS, ALPN `postgresql` required). Server side: the pooler is a
// libpq-like client whose checks follow libpq's sslmode exactly.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { tlsSettingProblems } from '../config/load.js';
import type { ClientTls, Config, SslMode, TlsSide } from '../config/types.js';
import { tlsStats, type TlsFailure } from '../metrics/stats.js';

export interface TlsContexts {
  /** Null when client_tls_sslmode = disable. */
  readonly client: ClientTlsContext | null;
  /** Null when server_tls_sslmode = disable. */
  readonly server: ServerTlsContext | null;
}

export interface ClientTlsContext {
  readonly side: ClientTls;
  readonly context: tls.SecureContext;
  /** Ask for a client certificate: only when one could be used (a CA to check it against). */
  readonly requestCert: boolean;
}

export interface ServerTlsContext {
  readonly side: TlsSide;
  readonly context: tls.SecureContext;
  /** The settings and the contents of the files they name: when a reload changes it, servers
   * connected under the old one are replaced (PgBouncer's tls_change_requires_reconnect). */
  readonly identity: string;
}

export interface TlsInfo {
  readonly version: string;
  readonly cipher: string;
}

/** What the handshake says about the client's certificate. */
export interface PeerCert {
  /** A certificate was presented and chains to client_tls_ca_file (and is not revoked). */
  readonly verified: boolean;
  /** Why it did not verify (OpenSSL's reason), or null. */
  readonly error: string | null;
  /** Subject CN: a string, an array when multi-valued, null when absent or no certificate. */
  readonly cn: string | string[] | null;
}

export type ClientTlsResult = { socket: tls.TLSSocket; info: TlsInfo; peer: PeerCert } | { error: string };

const PROTOCOL_ORDER = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;

/**
 * PgBouncer's protocol list (`secure`, `all`, `tlsv1.2`, `!tlsv1.1`, comma or colon separated) as
 * Node's contiguous min/max range.
 */
export function protocolRange(spec: string): { minVersion: tls.SecureVersion; maxVersion: tls.SecureVersion } {
  const on = new Set<string>();
  const names: Record<string, string[]> = {
    all: [...PROTOCOL_ORDER],
    secure: ['TLSv1.2', 'TLSv1.3'],
    default: ['TLSv1.2', 'TLSv1.3'],
    tlsv1: ['TLSv1'],
    'tlsv1.0': ['TLSv1'],
    'tlsv1.1': ['TLSv1.1'],
    'tlsv1.2': ['TLSv1.2'],
    'tlsv1.3': ['TLSv1.3'],
  };
  for (const raw of spec.split(/[,:]/)) {
    const word = raw.trim().toLowerCase();
    if (word === '') continue;
    const neg = word.startsWith('!');
    for (const v of names[neg ? word.slice(1) : word] ?? []) {
      if (neg) on.delete(v);
      else on.add(v);
    }
  }
  const enabled = PROTOCOL_ORDER.filter((v) => on.has(v));
  if (enabled.length === 0) throw new Error(`no TLS protocol version left enabled by "${spec}"`);
  return { minVersion: enabled[0]!, maxVersion: enabled[enabled.length - 1]! };
}

/**
 * PostgreSQL's rule for private keys: refused when others can read it, or group or others can
 * write it (0600 and 0640 are fine). Returns the problem, or null.
 */
export function keyFileProblem(file: string): string | null {
  let mode: number;
  try {
    mode = fs.statSync(file).mode & 0o777;
  } catch (err) {
    return `cannot read private key file "${file}": ${(err as Error).message}`;
  }
  if ((mode & 0o037) !== 0) {
    return `private key file "${file}" has group or world access (mode 0${mode.toString(8)}); it must be 0600 or 0640`;
  }
  return null;
}

function readPem(file: string | null, what: string): Buffer | undefined {
  if (file === null) return undefined;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read ${what} "${file}": ${(err as Error).message}`);
  }
}

/**
 * Node reads only the first CRL of a PEM Buffer, and checks CRLs for the whole chain once it has
 * one: every CRL in the file is passed as its own entry.
 */
function crlList(file: string | null): string[] | undefined {
  return pemBlocks(file, 'CRL file', 'X509 CRL');
}

/** Every PEM block of one kind in a file; a file with none is an error that names it. */
function pemBlocks(file: string | null, what: string, label: string): string[] | undefined {
  const pem = readPem(file, what);
  if (pem === undefined) return undefined;
  const blocks = pem.toString('latin1').match(new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g'));
  if (blocks === null) throw new Error(`${what} "${file}" holds no PEM ${label}`);
  return blocks;
}

/** Parse the key and the certificate on their own, so an error names the file that is wrong. */
function checkedPair(side: TlsSide): { key?: Buffer; cert?: Buffer } {
  const key = readPem(side.keyFile, 'private key file');
  const cert = readPem(side.certFile, 'certificate file');
  try {
    if (key !== undefined) crypto.createPrivateKey(key);
  } catch (err) {
    throw new Error(`private key file "${side.keyFile}" is not a usable key: ${(err as Error).message}`);
  }
  try {
    if (cert !== undefined) new crypto.X509Certificate(cert);
  } catch (err) {
    throw new Error(`certificate file "${side.certFile}" is not a usable certificate: ${(err as Error).message}`);
  }
  return { key, cert };
}

function context(side: TlsSide, extra: tls.SecureContextOptions): tls.SecureContext {
  if (side.keyFile !== null) {
    const p = keyFileProblem(side.keyFile);
    if (p !== null) throw new Error(p);
  }
  // PgBouncer's names for "the library's default"; TLS 1.3 suites go in the same OpenSSL list.
  const base = ['default', 'secure', 'fast', 'normal', ''].includes(side.ciphers) ? tls.DEFAULT_CIPHERS : side.ciphers === 'all' ? 'ALL' : side.ciphers;
  const ciphers = side.tls13Ciphers === '' ? base : `${side.tls13Ciphers}:${base}`;
  // Node ignores CA input that holds no certificate: a broken CA file must not pass silently.
  const ca = side.caFile === 'system' ? tls.rootCertificates.slice() : pemBlocks(side.caFile, 'CA file', 'CERTIFICATE');
  const crl = crlList(side.crlFile);
  const pair = checkedPair(side);
  try {
    return tls.createSecureContext({ ...protocolRange(side.protocols), ...pair, ca, crl, ciphers, ...extra });
  } catch (err) {
    const files = [side.certFile, side.keyFile, side.caFile, side.crlFile].filter((f) => f !== null).join(', ');
    throw new Error(`TLS setup failed (${files || 'no files'}): ${(err as Error).message}`);
  }
}

/** Build and validate both sides' contexts for a config generation. Throws with a clear reason. */
export function buildTlsContexts(cfg: Config, certAuthPossible: boolean): TlsContexts {
  const missing = tlsSettingProblems(cfg.clientTls, cfg.serverTls);
  if (missing.length > 0) throw new Error(missing.map((p) => `${p.setting}: ${p.message}`).join('; '));
  const c = cfg.clientTls;
  let client: ClientTlsContext | null = null;
  if (c.sslmode !== 'disable') {
    const extra: tls.SecureContextOptions = {};
    if (c.ecdhCurve !== 'auto' && c.ecdhCurve !== 'none') extra.ecdhCurve = c.ecdhCurve;
    // client_tls_dheparams: auto offers the DHE suites with OpenSSL's well-known groups of 2048
    // bits and up; none leaves them out. legacy asks for PgBouncer's 1024-bit group, which
    // OpenSSL 3 refuses: it gets auto's (a warning says so, see settingsWithoutEffect).
    if (c.dheParams !== 'none') extra.dhparam = 'auto';
    const verifyMode = c.sslmode === 'verify-ca' || c.sslmode === 'verify-full';
    client = {
      side: c,
      context: context(c, extra),
      requestCert: c.caFile !== null && (verifyMode || certAuthPossible),
    };
  }
  const s = cfg.serverTls;
  const server = s.sslmode === 'disable' ? null : { side: s, context: context(s, {}), identity: identity(s) };
  return { client, server };
}

/** What server connections made under these settings depend on; 'disable' without TLS. */
export function serverTlsIdentity(ctx: ServerTlsContext | null): string {
  return ctx?.identity ?? 'disable';
}

function identity(side: TlsSide): string {
  const hash = crypto.createHash('sha256').update(JSON.stringify(side));
  for (const file of [side.certFile, side.keyFile, side.caFile === 'system' ? null : side.caFile, side.crlFile]) {
    // The files were read just before; a file that vanished since is as good as changed.
    if (file !== null) hash.update(readPem(file, 'file') ?? '');
  }
  return hash.digest('hex');
}

// ------------------------------------------------------------------ client side

/**
 * Run the TLS handshake as the server on a client connection. `pending` holds bytes already read
 * (the ClientHello of a direct-TLS client); they are fed to the TLS layer first.
 */
export function acceptClientTls(raw: net.Socket, ctx: ClientTlsContext, pending: Buffer | null): Promise<ClientTlsResult> {
  return new Promise((resolve) => {
    // Node's TLS server takes over the socket's handle and would lose bytes already read; a
    // direct-TLS connection therefore goes through a small Duplex that replays them first.
    const transport: net.Socket | Duplex = pending === null ? raw : replayDuplex(raw, pending);
    const sock = new tls.TLSSocket(transport as net.Socket, {
      isServer: true,
      secureContext: ctx.context,
      requestCert: ctx.requestCert,
      // Never let Node reject: a presented certificate that does not verify is only "not
      // trusted" in allow/prefer/require; the verdict is read below from verifyError().
      rejectUnauthorized: false,
      ALPNProtocols: ['postgresql'],
    });
    const started = performance.now();
    let settled = false;
    const fail = (reason: TlsFailure, message: string) => {
      if (settled) return;
      settled = true;
      tlsStats.failedBy[reason]++;
      sock.destroy();
      resolve({ error: `TLS handshake failed: ${message}` });
    };
    const onError = (err: Error) => fail(tlsFailure(err), err.message);
    // A peer that hangs up mid-handshake may end the socket without an 'error'.
    const onClose = () => fail('closed', 'the client closed the connection');
    sock.once('error', onError);
    sock.once('close', onClose);
    sock.once('secure', () => {
      if (settled) return;
      settled = true;
      sock.removeListener('error', onError);
      sock.removeListener('close', onClose);
      tlsStats.handshake.observe(performance.now() - started);
      resolve({ socket: sock, info: tlsInfo(sock), peer: peerCert(sock) });
    });
  });
}

/**
 * At most `limit` client TLS handshakes at once; the rest wait, in arrival order, before their
 * SSLRequest is answered. Handshakes run on the event loop, a millisecond or more of CPU each: in
 * a connection storm, hundreds at once turn every loop turn into a long one, during which the
 * kernel's accept queue (listen_backlog) overflows and drops SYNs, which clients retry only
 * after 1, 3, 7 s; established clients wait just as long for their results. Bounded, each turn
 * stays short, accept() keeps draining the queue, and a waiting client costs a socket, not a
 * retransmit timeout.
 */
export class HandshakeGate {
  private running = 0;
  /** Insertion-ordered: FIFO, with O(1) removal of a client that leaves while waiting. */
  private readonly waiting = new Set<() => void>();

  constructor(private readonly limit: number) {}

  /** Run `start` now (and return null) or when a slot frees (and return a function that
   * withdraws the waiting entry). */
  enter(start: () => void): (() => void) | null {
    if (this.running < this.limit) {
      this.running++;
      start();
      return null;
    }
    this.waiting.add(start);
    return () => this.waiting.delete(start);
  }

  /** A handshake that `enter` started has ended, either way. */
  leave(): void {
    const next = this.waiting.values().next().value;
    if (next === undefined) {
      this.running--;
      return;
    }
    this.waiting.delete(next);
    next();
  }
}

/** A failed handshake's reason from OpenSSL's error code (Node prefixes it with ERR_SSL_). */
function tlsFailure(err: Error & { code?: string }): TlsFailure {
  const code = err.code ?? '';
  if (/UNSUPPORTED_PROTOCOL|VERSION_TOO_(LOW|HIGH)|ALERT_PROTOCOL_VERSION|INAPPROPRIATE_FALLBACK/.test(code)) return 'protocol_version';
  // A plaintext startup packet, an HTTP request or other non-TLS bytes where a ClientHello belongs.
  if (/WRONG_VERSION_NUMBER|HTTPS?_(PROXY_)?REQUEST|PACKET_LENGTH_TOO_LONG|RECORD_LENGTH_MISMATCH|UNKNOWN_PROTOCOL/.test(code)) return 'not_tls';
  if (/NO_SHARED_CIPHER|NO_CIPHERS_AVAILABLE|NO_SUITABLE_SIGNATURE_ALGORITHM/.test(code)) return 'no_shared_cipher';
  if (/APPLICATION_PROTOCOL|ALPN/.test(code)) return 'alpn';
  if (/CERT|UNKNOWN_CA/.test(code)) return 'certificate';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'closed';
  return 'other';
}

/** Node pitfall: with isServer + requestCert, `authorized` is never set on a wrapped socket and an
 * untrusted certificate still completes the handshake. The handle's verifyError() holds the truth. */
function peerCert(sock: tls.TLSSocket): PeerCert {
  const cert = sock.getPeerCertificate();
  if (cert === null || Object.keys(cert).length === 0) return { verified: false, error: null, cn: null };
  const handle = (sock as unknown as { _handle?: { verifyError(): Error | null } })._handle;
  // verifyError() is null when the certificate verified.
  const err = handle === undefined ? new Error('cannot read the certificate verdict') : handle.verifyError();
  const cn = (cert.subject as Record<string, string | string[] | undefined> | undefined)?.CN ?? null;
  if (err === null) return { verified: true, error: null, cn };
  // With rejectUnauthorized off OpenSSL goes on after the first failure and reports the last one:
  // a self-signed certificate then shows up as "no CRL for its issuer". Name the real reason.
  const code = (err as Error & { code?: string }).code;
  const detailed = sock.getPeerCertificate(true);
  const selfIssued = detailed.issuerCertificate !== undefined && detailed.issuerCertificate.fingerprint256 === detailed.fingerprint256;
  return { verified: false, error: code === 'UNABLE_TO_GET_CRL' && selfIssued ? 'self-signed certificate' : describeVerifyError(err), cn };
}

function describeVerifyError(err: Error & { code?: string }): string {
  switch (err.code) {
    case 'CERT_REVOKED':
      return 'certificate revoked';
    case 'CERT_HAS_EXPIRED':
      return 'certificate has expired';
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
      return 'self-signed certificate';
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
      return 'certificate is not signed by a trusted CA';
    default:
      return err.message;
  }
}

function tlsInfo(sock: tls.TLSSocket): TlsInfo {
  return { version: sock.getProtocol() ?? '', cipher: sock.getCipher()?.name ?? '' };
}

/** A Duplex over `raw` that first yields `first` (bytes already consumed from it). */
function replayDuplex(raw: net.Socket, first: Buffer): Duplex {
  raw.removeAllListeners('data');
  const d = new Duplex({
    read() {
      raw.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      raw.write(chunk, cb);
    },
    final(cb) {
      raw.end(cb);
    },
    destroy(err, cb) {
      raw.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(first);
  raw.on('data', (chunk: Buffer) => {
    if (!d.push(chunk)) raw.pause();
  });
  raw.on('end', () => d.push(null));
  raw.on('close', () => d.destroy());
  raw.on('error', (err) => d.destroy(err));
  return d;
}

// ------------------------------------------------------------------ server side

export type ServerTlsResult = { socket: tls.TLSSocket; info: TlsInfo } | { socket: null } | { error: string };

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/** `server_tls_ca_file = system` forces verify-full, as libpq's sslrootcert=system does:
 * anyone can get a publicly trusted certificate for a name they control. */
export function effectiveServerMode(side: TlsSide): SslMode {
  return side.caFile === 'system' ? 'verify-full' : side.sslmode;
}

/** Does this mode make the pooler verify the server's chain / its host name (libpq's rules)? */
export function serverChecks(side: TlsSide): { verifyChain: boolean; verifyHost: boolean } {
  const mode: SslMode = effectiveServerMode(side);
  // sslrootcert=system forces verify-full; require with a CA file verifies the chain (libpq).
  const verifyHost = mode === 'verify-full' || side.caFile === 'system';
  const verifyChain = verifyHost || mode === 'verify-ca' || (mode === 'require' && side.caFile !== null);
  return { verifyChain, verifyHost };
}

/**
 * Ask the server for TLS on a connected socket and run the handshake. Resolves with the TLS
 * socket, with `{socket: null}` when the server said no and the mode allows plain text, or an
 * error that names the TLS reason.
 */
export function connectServerTls(sock: net.Socket, ctx: ServerTlsContext, host: string): Promise<ServerTlsResult> {
  return new Promise((resolve) => {
    const fail = (error: string) => {
      sock.destroy();
      resolve({ error });
    };
    sock.once('error', (err) => fail(`could not connect to server: ${err.message}`));
    // A server that closes without answering the SSLRequest must fail the login now, not at
    // server_connect_timeout.
    const onEnd = () => fail('server closed the connection before answering the SSL request');
    sock.once('end', onEnd);
    sock.once('data', (answer: Buffer) => {
      sock.removeAllListeners('error');
      sock.removeListener('end', onEnd);
      // Bytes after the answer would be unencrypted data injected before the handshake.
      if (answer.length !== 1) return fail('server sent unexpected data after the SSL request answer');
      if (answer[0] === 0x4e /* N */) {
        const mode = effectiveServerMode(ctx.side);
        if (mode === 'prefer' || mode === 'allow') return resolve({ socket: null });
        return fail('server does not support SSL, but SSL was required (server_tls_sslmode=' + mode + ')');
      }
      if (answer[0] !== 0x53 /* S */) return fail('server sent an invalid answer to the SSL request');
      const { verifyChain, verifyHost } = serverChecks(ctx.side);
      const t = tls.connect({
        socket: sock,
        secureContext: ctx.context,
        rejectUnauthorized: verifyChain,
        // SNI only names a host, never an IP address (RFC 6066).
        servername: net.isIP(host) === 0 ? host : undefined,
        checkServerIdentity: verifyHost ? (_h, cert) => tls.checkServerIdentity(host, cert) : () => undefined,
      });
      t.once('secureConnect', () => {
        t.removeAllListeners('error');
        resolve({ socket: t, info: tlsInfo(t) });
      });
      t.once('error', (err: Error & { code?: string }) =>
        fail(`TLS handshake with server failed: ${describeServerError(err)}`),
      );
    });
    sock.write(SSL_REQUEST);
  });
}

function describeServerError(err: Error & { code?: string }): string {
  if (err.code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `server certificate does not match host name: ${err.message}`;
  const d = describeVerifyError(err);
  // OpenSSL's words first, as PgBouncer logs them ("certificate verify failed").
  return d === err.message ? d : `certificate verify failed: server ${d} (${err.code})`;
}
