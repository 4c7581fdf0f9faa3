// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, in both roles, and the md5 hashes.
//
// Every message from the other side is hostile until checked: parse errors come back as values,
// sizes are bounded before anything is allocated or hashed, and secrets are compared in constant
// time. Messages are parsed as latin1 so that one byte is one character and nothing can fail to
// decode; the exact bytes still go into the AuthMessage.
//
// Passwords are used as their UTF-8 bytes without SASLprep. PostgreSQL skips SASLprep for ASCII
// passwords too, so the keys differ only for non-ASCII passwords that NFKC or its mapping tables
// would change.

import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export interface ScramSecret {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export type ScramError = { error: string };

const KEY_LEN = 32;
const DEFAULT_ITERATIONS = 4096;
// PostgreSQL's defaults (SCRAM_DEFAULT_SALT_LEN, SCRAM_RAW_NONCE_LEN).
const SALT_LEN = 16;
const RAW_NONCE_LEN = 18;
// Real SCRAM messages are a few hundred bytes; this caps the work a peer can ask of us.
const MAX_MESSAGE = 8192;
const MAX_NONCE = 512;
// A hostile server could otherwise make one login cost minutes of PBKDF2 on the event loop.
const MAX_CLIENT_ITERATIONS = 10_000_000;
const MAX_SECRET_ITERATIONS = 0x7fffffff;

// RFC 5802 "printable": %x21-7E except ','.
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
// Padded base64 only; Buffer.from(s, 'base64') alone would silently skip bad characters.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ATTRIBUTE = /^[A-Za-z]=/;

const COMMA = Buffer.from(',');
// We never use channel binding as a client: the gs2 header is always "n,,".
const GS2_HEADER = Buffer.from('n,,');
const GS2_HEADER_B64 = GS2_HEADER.toString('base64');

function decodeBase64(s: string): Buffer | null {
  return BASE64.test(s) ? Buffer.from(s, 'base64') : null;
}

function hmac(key: Buffer, data: Buffer | string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function deriveKeys(password: string, salt: Buffer, iterations: number) {
  const salted = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, KEY_LEN, 'sha256');
  return { clientKey: hmac(salted, 'Client Key'), serverKey: hmac(salted, 'Server Key') };
}

function authMessage(clientFirstBare: Buffer, serverFirst: Buffer, finalWithoutProof: Buffer) {
  return Buffer.concat([clientFirstBare, COMMA, serverFirst, COMMA, finalWithoutProof]);
}

function defaultNonce(): string {
  return randomBytes(RAW_NONCE_LEN).toString('base64');
}

/** Extensions are allowed after the known attributes, but must still look like attributes. */
function badExtension(attrs: string[], from: number): boolean {
  for (let i = from; i < attrs.length; i++) if (!ATTRIBUTE.test(attrs[i]!)) return true;
  return false;
}

/** `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as in pg_authid and userlists. */
export function parseScramSecret(s: string): ScramSecret | null {
  const m = /^SCRAM-SHA-256\$([0-9]{1,10}):([^$:]+)\$([^$:]+):([^$:]+)$/.exec(s);
  if (m === null) return null;
  const iterations = Number(m[1]);
  const salt = decodeBase64(m[2]!);
  const storedKey = decodeBase64(m[3]!);
  const serverKey = decodeBase64(m[4]!);
  if (iterations < 1 || iterations > MAX_SECRET_ITERATIONS) return null;
  if (salt === null || salt.length === 0) return null;
  if (storedKey?.length !== KEY_LEN || serverKey?.length !== KEY_LEN) return null;
  return { iterations, salt, storedKey, serverKey };
}

export function makeScramSecret(
  password: string,
  salt: Buffer = randomBytes(SALT_LEN),
  iterations = DEFAULT_ITERATIONS,
): ScramSecret {
  const { clientKey, serverKey } = deriveKeys(password, salt, iterations);
  return { iterations, salt, storedKey: sha256(clientKey), serverKey };
}

type ServerState = 'client-first' | 'client-final' | 'done' | 'failed';

/** The pooler as SCRAM server, authenticating a client against a stored secret. */
export class ScramServerSession {
  private state: ServerState = 'client-first';
  private cbind = '';
  private nonce = '';
  private clientFirstBare: Buffer = Buffer.alloc(0);
  private serverFirst: Buffer = Buffer.alloc(0);

  constructor(
    private readonly secret: ScramSecret,
    private readonly makeNonce: () => string = defaultNonce,
  ) {}

  /**
   * A stable stand-in secret for a user that does not exist, derived from a key kept secret by
   * the pooler. The client then sees the same exchange (and the same salt on every attempt) as
   * for a wrong password, so probing cannot tell the two apart; PostgreSQL does the same.
   */
  static fakeSecret(user: string, key: Buffer, iterations = DEFAULT_ITERATIONS): ScramSecret {
    const derive = (label: string) => hmac(key, Buffer.from(`${label}\0${user}`, 'utf8'));
    return {
      iterations,
      salt: derive('salt').subarray(0, SALT_LEN),
      storedKey: derive('stored-key'),
      serverKey: derive('server-key'),
    };
  }

  handleClientFirst(msg: Buffer): { serverFirst: Buffer } | ScramError {
    if (this.state !== 'client-first') return { error: 'unexpected SCRAM client-first message' };
    this.state = 'failed';
    if (msg.length > MAX_MESSAGE) return { error: 'SCRAM client-first message too long' };
    const s = msg.toString('latin1');
    const flag = s[0];
    if (flag === 'p') {
      return { error: 'client requires SCRAM channel binding, which is not offered' };
    }
    if ((flag !== 'n' && flag !== 'y') || s[1] !== ',') {
      return { error: 'malformed SCRAM message: invalid GS2 header' };
    }
    if (s.startsWith('a=', 2)) return { error: 'SCRAM authorization identity is not supported' };
    if (s[2] !== ',') return { error: 'malformed SCRAM message: invalid GS2 header' };
    const attrs = s.slice(3).split(',');
    if (attrs[0]?.startsWith('m=')) return { error: 'unsupported SCRAM mandatory extension' };
    // The user name is ignored, as in PostgreSQL: the startup packet's user is authoritative.
    if (!attrs[0]?.startsWith('n=') || !attrs[1]?.startsWith('r=') || badExtension(attrs, 2)) {
      return { error: 'malformed SCRAM client-first message' };
    }
    const clientNonce = attrs[1].slice(2);
    if (clientNonce.length > MAX_NONCE) return { error: 'SCRAM client nonce too long' };
    if (!PRINTABLE.test(clientNonce)) return { error: 'invalid SCRAM client nonce' };

    // With 'y' the client could bind but believes we cannot. That is true while the pooler does
    // not advertise SCRAM-SHA-256-PLUS; if it ever does, 'y' means a downgrade and must fail.
    this.cbind = Buffer.from(`${flag},,`).toString('base64');
    this.nonce = clientNonce + this.makeNonce();
    this.clientFirstBare = Buffer.from(msg.subarray(3));
    const { salt, iterations } = this.secret;
    this.serverFirst = Buffer.from(
      `r=${this.nonce},s=${salt.toString('base64')},i=${iterations}`,
      'latin1',
    );
    this.state = 'client-final';
    return { serverFirst: Buffer.from(this.serverFirst) };
  }

  /** On success also returns the client's ClientKey, which lets the pooler log in to PostgreSQL
   * with SCRAM as that client without knowing the password. */
  handleClientFinal(
    msg: Buffer,
  ): { ok: true; serverFinal: Buffer; clientKey: Buffer } | { ok: false; error: string } {
    const fail = (error: string) => ({ ok: false, error }) as const;
    if (this.state !== 'client-final') return fail('unexpected SCRAM client-final message');
    this.state = 'failed';
    if (msg.length > MAX_MESSAGE) return fail('SCRAM client-final message too long');
    const s = msg.toString('latin1');
    // The proof must be the last attribute, and everything before it is signed.
    const proofAt = s.lastIndexOf(',p=');
    if (proofAt < 0) return fail('malformed SCRAM client-final message: no proof');
    const proof = decodeBase64(s.slice(proofAt + 3));
    if (proof?.length !== KEY_LEN) return fail('malformed SCRAM client-final message: bad proof');
    const attrs = s.slice(0, proofAt).split(',');
    if (!attrs[0]?.startsWith('c=') || !attrs[1]?.startsWith('r=') || badExtension(attrs, 2)) {
      return fail('malformed SCRAM client-final message');
    }
    if (attrs[0].slice(2) !== this.cbind) return fail('SCRAM channel binding check failed');
    if (attrs[1].slice(2) !== this.nonce) return fail('SCRAM nonce mismatch');

    const { storedKey, serverKey } = this.secret;
    const auth = authMessage(this.clientFirstBare, this.serverFirst, msg.subarray(0, proofAt));
    const clientKey = xor(proof, hmac(storedKey, auth));
    const computed = sha256(clientKey);
    if (storedKey.length !== computed.length || !timingSafeEqual(computed, storedKey)) {
      return fail('SCRAM proof does not match');
    }
    this.state = 'done';
    const serverFinal = Buffer.from(`v=${hmac(serverKey, auth).toString('base64')}`, 'latin1');
    return { ok: true, serverFinal, clientKey };
  }
}

/** A password, or the keys recovered from a client's exchange (pass-through). */
export type ScramCredentials = { password: string } | { clientKey: Buffer; serverKey: Buffer };

export interface ScramClientOptions {
  /** Sent in client-first. PostgreSQL ignores it and libpq sends it empty, which is the default. */
  user?: string;
  nonce?: () => string;
}

type ClientState = 'server-first' | 'server-final' | 'done' | 'failed';

/** The pooler as SCRAM client, logging in to PostgreSQL. */
export class ScramClientSession {
  private state: ClientState = 'server-first';
  private readonly nonce: string;
  private readonly clientFirstBare: Buffer;
  private serverSignature: Buffer = Buffer.alloc(0);

  constructor(
    private readonly credentials: ScramCredentials,
    options: ScramClientOptions = {},
  ) {
    this.nonce = (options.nonce ?? defaultNonce)();
    const user = (options.user ?? '').replaceAll('=', '=3D').replaceAll(',', '=2C');
    this.clientFirstBare = Buffer.from(`n=${user},r=${this.nonce}`, 'utf8');
  }

  /** The SASLInitialResponse data. */
  clientFirst(): Buffer {
    return Buffer.concat([GS2_HEADER, this.clientFirstBare]);
  }

  /** Returns the client-final message (SASLResponse data). */
  handleServerFirst(msg: Buffer): Buffer | ScramError {
    if (this.state !== 'server-first') return { error: 'unexpected SCRAM server-first message' };
    this.state = 'failed';
    if (msg.length > MAX_MESSAGE) return { error: 'SCRAM server-first message too long' };
    const attrs = msg.toString('latin1').split(',');
    if (attrs[0]?.startsWith('m=')) return { error: 'unsupported SCRAM mandatory extension' };
    const [r, s, i] = attrs;
    if (!r?.startsWith('r=') || !s?.startsWith('s=') || !i?.startsWith('i=')) {
      return { error: 'malformed SCRAM server-first message' };
    }
    if (badExtension(attrs, 3)) return { error: 'malformed SCRAM server-first message' };
    const nonce = r.slice(2);
    if (!nonce.startsWith(this.nonce) || nonce.length === this.nonce.length) {
      return { error: 'SCRAM server nonce does not extend the client nonce' };
    }
    if (!PRINTABLE.test(nonce)) return { error: 'invalid SCRAM server nonce' };
    const salt = decodeBase64(s.slice(2));
    if (salt === null || salt.length === 0) return { error: 'invalid SCRAM salt' };
    const iterText = i.slice(2);
    const iterations = /^[0-9]{1,9}$/.test(iterText) ? Number(iterText) : 0;
    if (iterations < 1 || iterations > MAX_CLIENT_ITERATIONS) {
      return { error: `invalid SCRAM iteration count "${iterText.slice(0, 20)}"` };
    }

    const keys =
      'password' in this.credentials
        ? deriveKeys(this.credentials.password, salt, iterations)
        : this.credentials;
    if (keys.clientKey.length !== KEY_LEN || keys.serverKey.length !== KEY_LEN) {
      return { error: 'SCRAM pass-through keys must be 32 bytes' };
    }
    const finalWithoutProof = Buffer.from(`c=${GS2_HEADER_B64},r=${nonce}`, 'latin1');
    const auth = authMessage(this.clientFirstBare, msg, finalWithoutProof);
    const proof = xor(keys.clientKey, hmac(sha256(keys.clientKey), auth));
    this.serverSignature = hmac(keys.serverKey, auth);
    this.state = 'server-final';
    return Buffer.concat([finalWithoutProof, Buffer.from(`,p=${proof.toString('base64')}`)]);
  }

  verifyServerFinal(msg: Buffer): true | ScramError {
    if (this.state !== 'server-final') return { error: 'unexpected SCRAM server-final message' };
    this.state = 'failed';
    if (msg.length > MAX_MESSAGE) return { error: 'SCRAM server-final message too long' };
    const first = msg.toString('latin1').split(',')[0] ?? '';
    if (first.startsWith('e=')) {
      return { error: `server rejected SCRAM authentication: ${first.slice(2, 200)}` };
    }
    const signature = first.startsWith('v=') ? decodeBase64(first.slice(2)) : null;
    if (signature?.length !== KEY_LEN) return { error: 'malformed SCRAM server-final message' };
    if (!timingSafeEqual(signature, this.serverSignature)) {
      return { error: 'invalid SCRAM server signature' };
    }
    this.state = 'done';
    return true;
  }
}

const MD5_HASH = /^md5[0-9a-f]{32}$/;

function md5hex(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

/** The `md5…` form stored in pg_authid: md5 of the password followed by the user name. */
export function md5PasswordHash(user: string, password: string): string {
  return 'md5' + md5hex(Buffer.from(password + user, 'utf8'));
}

/**
 * What a client answers to AuthenticationMD5Password. Like PostgreSQL and PgBouncer, a password
 * that has the exact shape of an md5 hash is taken to be that hash.
 */
export function md5Response(secretOrHash: string, user: string, salt: Buffer): string {
  const hash = MD5_HASH.test(secretOrHash) ? secretOrHash : md5PasswordHash(user, secretOrHash);
  return 'md5' + md5hex(Buffer.concat([Buffer.from(hash.slice(3), 'latin1'), salt]));
}
