// Client authentication: one AuthFlow per login, behind one interface, for each auth_type.
// An unknown user runs the same exchange as a wrong password and gets the same answer, so user
// names cannot be probed (PostgreSQL's rule; for SCRAM a deterministic fake salt). A known user
// whose secret is empty (an empty auth_file entry, a NULL auth_query password) is let in by trust
// and matched by no password, as in PgBouncer.
import crypto from 'node:crypto';
import type { AuthType } from '../config/types.js';
import { Errors, type PoolerError } from '../errors.js';
import * as encode from '../protocol/encode.js';
import {
  ScramServerSession,
  makeScramSecret,
  md5PasswordHash,
  md5Response,
  parseScramSecret,
  type ScramSecret,
} from '../protocol/scram.js';

export type AuthResult =
  | { send: Buffer }
  /** `final` is a last message to send before AuthenticationOk (SASLFinal). */
  | { ok: true; scramKeys: { clientKey: Buffer; serverKey: Buffer } | null; final?: Buffer }
  | { error: PoolerError };

export interface AuthFlow {
  /** The method's name for logs (trust, md5, scram-sha-256, …). */
  readonly method: string;
  /** The first step: a request to send, or an immediate verdict (trust). */
  start(): AuthResult;
  /** A PasswordMessage / SASLInitialResponse / SASLResponse body from the client. */
  onPassword(body: Buffer): AuthResult;
}

/** Fake SCRAM salts for unknown users are derived from this per-process key. */
const FAKE_KEY = crypto.randomBytes(32);

/**
 * Build the flow for one login. `known` is the auth_file / auth_query secret, '' for a known user
 * without one, or null for an unknown user (both go through the exchange and fail it);
 * `scramIterations` (scram_iterations) is used for a SCRAM verifier made from a plain password.
 */
export function authFlow(method: AuthType | 'reject', user: string, known: string | null, scramIterations: number): AuthFlow {
  const secret = known === '' ? null : known;
  switch (method) {
    case 'trust':
    case 'any':
      return new TrustFlow(method);
    case 'plain':
      return new PlainFlow(user, secret);
    case 'md5':
      // PgBouncer's rule: md5 auth with a SCRAM secret authenticates with SCRAM.
      if (secret !== null && parseScramSecret(secret) !== null) return new ScramFlow(user, secret, scramIterations);
      return new Md5Flow(user, secret);
    case 'scram-sha-256':
      return new ScramFlow(user, secret, scramIterations);
    default:
      return new RejectFlow(method, user);
  }
}

class TrustFlow implements AuthFlow {
  constructor(readonly method: string) {}
  start(): AuthResult {
    return { ok: true, scramKeys: null };
  }
  onPassword(): AuthResult {
    return { error: Errors.protocolViolation('unexpected password message') };
  }
}

class RejectFlow implements AuthFlow {
  constructor(
    readonly method: string,
    private readonly user: string,
  ) {}
  start(): AuthResult {
    return { error: Errors.authRejected(`authentication method ${this.method} is not available for user "${this.user}"`) };
  }
  onPassword(): AuthResult {
    return this.start();
  }
}

function cstring(body: Buffer): string {
  const z = body.indexOf(0);
  return body.toString('utf8', 0, z < 0 ? body.length : z);
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  // Compare equal-length digests so the time does not leak the length either.
  return crypto.timingSafeEqual(crypto.createHash('sha256').update(x).digest(), crypto.createHash('sha256').update(y).digest());
}

/** Does a cleartext password match a stored secret of any kind? */
function passwordMatches(user: string, password: string, secret: string): boolean {
  const scram = parseScramSecret(secret);
  if (scram !== null) {
    const candidate = makeScramSecret(password, scram.salt, scram.iterations);
    return crypto.timingSafeEqual(candidate.storedKey, scram.storedKey);
  }
  if (/^md5[0-9a-f]{32}$/.test(secret)) return safeEqual(md5PasswordHash(user, password), secret);
  return safeEqual(password, secret);
}

class PlainFlow implements AuthFlow {
  readonly method = 'plain';
  constructor(
    private readonly user: string,
    private readonly secret: string | null,
  ) {}
  start(): AuthResult {
    return { send: encode.authenticationCleartextPassword };
  }
  onPassword(body: Buffer): AuthResult {
    const ok = this.secret !== null && passwordMatches(this.user, cstring(body), this.secret);
    return ok ? { ok: true, scramKeys: null } : { error: Errors.authFailed(this.user) };
  }
}

class Md5Flow implements AuthFlow {
  readonly method = 'md5';
  private readonly salt = crypto.randomBytes(4);
  constructor(
    private readonly user: string,
    private readonly secret: string | null,
  ) {}
  start(): AuthResult {
    return { send: encode.authenticationMD5Password(this.salt) };
  }
  onPassword(body: Buffer): AuthResult {
    const answer = cstring(body);
    const expected = this.secret === null ? 'md5-no-such-user' : md5Response(this.secret, this.user, this.salt);
    return this.secret !== null && safeEqual(answer, expected)
      ? { ok: true, scramKeys: null }
      : { error: Errors.authFailed(this.user) };
  }
}

/**
 * SCRAM secrets derived from plaintext auth_file passwords, one per password and iteration count
 * for the life of the process: PBKDF2 with 4096 iterations costs about a millisecond of CPU, which
 * every login would otherwise pay (the salt is random per process, as a stored verifier's is per
 * role).
 */
const derived = new Map<string, ScramSecret>();

function derivedSecret(password: string, iterations: number): ScramSecret {
  const key = `${iterations}:${password}`;
  let s = derived.get(key);
  if (s === undefined) {
    // Bounded: one entry per distinct password seen; a reload that changes passwords adds a few.
    if (derived.size >= 10_000) derived.clear();
    s = makeScramSecret(password, undefined, iterations);
    derived.set(key, s);
  }
  return s;
}

class ScramFlow implements AuthFlow {
  readonly method = 'scram-sha-256';
  private readonly session: ScramServerSession;
  private readonly scramSecret: ScramSecret;
  private readonly known: boolean;
  private step = 0;

  constructor(user: string, secret: string | null, iterations: number) {
    let parsed: ScramSecret | null = null;
    if (secret !== null) {
      parsed = parseScramSecret(secret);
      // A plaintext secret can serve SCRAM; an md5 hash cannot (as in PostgreSQL).
      if (parsed === null && !/^md5[0-9a-f]{32}$/.test(secret)) parsed = derivedSecret(secret, iterations);
    }
    this.known = parsed !== null;
    // An unknown user is offered the iteration count a known one with a plain password gets.
    this.scramSecret = parsed ?? ScramServerSession.fakeSecret(user, FAKE_KEY, iterations);
    this.session = new ScramServerSession(this.scramSecret);
  }

  start(): AuthResult {
    return { send: encode.authenticationSASL(['SCRAM-SHA-256']) };
  }

  onPassword(body: Buffer): AuthResult {
    if (this.step === 0) {
      this.step = 1;
      // SASLInitialResponse: mechanism name, Int32 length, client-first-message.
      const z = body.indexOf(0);
      if (z < 0 || body.length < z + 5) return { error: Errors.protocolViolation('malformed SASLInitialResponse') };
      const mech = body.toString('utf8', 0, z);
      // The name is not echoed: a broken client may put anything here, its proof included
      // (PostgreSQL does not echo it either).
      if (mech !== 'SCRAM-SHA-256') return { error: Errors.protocolViolation('client selected an invalid SASL authentication mechanism') };
      const len = body.readInt32BE(z + 1);
      const data = body.subarray(z + 5);
      if (len !== data.length) return { error: Errors.protocolViolation('malformed SASLInitialResponse length') };
      const r = this.session.handleClientFirst(data);
      if ('error' in r) return { error: Errors.protocolViolation(r.error) };
      return { send: encode.authenticationSASLContinue(r.serverFirst) };
    }
    if (this.step === 1) {
      this.step = 2;
      const r = this.session.handleClientFinal(body);
      // PgBouncer's words for any SCRAM failure, an unknown user's included.
      if (!r.ok || !this.known) return { error: Errors.saslFailed() };
      return {
        ok: true,
        scramKeys: { clientKey: r.clientKey, serverKey: this.scramSecret.serverKey },
        final: encode.authenticationSASLFinal(r.serverFinal),
      };
    }
    return { error: Errors.protocolViolation('unexpected SASL message') };
  }
}
