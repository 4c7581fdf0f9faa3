// Logging in to PostgreSQL, and the frontend messages the pooler itself sends to servers.
// The only importer of pg-protocol: its serializer builds client-side messages, which is exactly
// the pooler's role towards PostgreSQL.
import { serialize } from 'pg-protocol';
import { AuthCode } from '../protocol/codes.js';
import { ScramClientSession, md5Response } from '../protocol/scram.js';

export const Frontend = {
  /**
   * StartupMessage asking for protocol 3.2: PostgreSQL 18 accepts it (32-byte cancel keys),
   * older servers answer NegotiateProtocolVersion and the session goes on as 3.0. pg-protocol
   * only builds 3.0 startups, so this one is written here.
   */
  startup: (params: Record<string, string>): Buffer => {
    const parts = [Buffer.from([0, 3, 0, 2])];
    for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`));
    parts.push(Buffer.from([0]));
    const body = Buffer.concat(parts);
    const out = Buffer.allocUnsafe(4 + body.length);
    out.writeInt32BE(4 + body.length, 0);
    body.copy(out, 4);
    return out;
  },
  query: (sql: string): Buffer => serialize.query(sql),
  terminate: serialize.end(),
  sslRequest: serialize.requestSsl(),
  /** Parse + Bind + Execute + Sync of an unnamed statement with text parameters (auth_query). */
  execParams: (sql: string, values: string[]): Buffer =>
    Buffer.concat([
      serialize.parse({ text: sql }),
      serialize.bind({ values }),
      serialize.describe({ type: 'P' }),
      serialize.execute(),
      serialize.sync(),
    ]),
};

/** How the pooler proves itself to PostgreSQL for one server user. */
export type ServerCredentials =
  | { kind: 'none' }
  | { kind: 'password'; password: string }
  /** An md5 secret from auth_file: usable for md5 auth only. */
  | { kind: 'md5'; hash: string }
  /** SCRAM pass-through: the keys recovered from the client's own SCRAM exchange. */
  | { kind: 'scram-keys'; clientKey: Buffer; serverKey: Buffer }
  /** A SCRAM verifier without the client's keys (a forced user, a client that did not use
   * SCRAM): it answers no challenge. */
  | { kind: 'scram-secret' };

/** `error` is what the waiting clients are told; `log` says more, for the log. */
export type AuthStep = { reply: Buffer } | { done: true } | { wait: true } | { error: string; log?: string };

/** PgBouncer's answer when the stored secret cannot serve the method the server asks for. */
const WRONG_PASSWORD_TYPE = 'server login failed: wrong password type';

/** One server login's authentication exchange: fed each 'R' message body, returns what to send. */
export class ServerAuth {
  private scram: ScramClientSession | null = null;

  constructor(
    private readonly user: string,
    private readonly creds: ServerCredentials,
  ) {}

  onAuthentication(body: Buffer): AuthStep {
    if (body.length < 4) return { error: 'invalid authentication request from server' };
    const code = body.readInt32BE(0);
    switch (code) {
      case AuthCode.Ok:
        return { done: true };
      case AuthCode.CleartextPassword: {
        const pw = this.plainPassword();
        if (pw === null) return { error: `server asked for a password for user "${this.user}" but none is known` };
        return { reply: serialize.password(pw) };
      }
      case AuthCode.MD5Password: {
        if (body.length < 8) return { error: 'invalid MD5 request from server' };
        const salt = body.subarray(4, 8);
        if (this.creds.kind === 'scram-secret' || this.creds.kind === 'scram-keys') {
          return { error: WRONG_PASSWORD_TYPE, log: 'cannot do MD5 authentication: wrong password type' };
        }
        const secret = this.creds.kind === 'md5' ? this.creds.hash : this.plainPassword();
        if (secret === null) return { error: `server asked for an MD5 password for user "${this.user}" but none is known` };
        return { reply: serialize.password(md5Response(secret, this.user, salt)) };
      }
      case AuthCode.SASL: {
        const mechanisms = body.subarray(4).toString('utf8').split('\0');
        if (!mechanisms.includes('SCRAM-SHA-256')) return { error: 'server offered no supported SASL mechanism' };
        if (this.creds.kind === 'password') this.scram = new ScramClientSession({ password: this.creds.password });
        else if (this.creds.kind === 'scram-keys')
          this.scram = new ScramClientSession({ clientKey: this.creds.clientKey, serverKey: this.creds.serverKey });
        else if (this.creds.kind === 'scram-secret')
          return {
            error: WRONG_PASSWORD_TYPE,
            log: 'cannot do SCRAM authentication: password is SCRAM secret but client authentication did not provide SCRAM keys',
          };
        else if (this.creds.kind === 'md5') return { error: WRONG_PASSWORD_TYPE, log: 'cannot do SCRAM authentication: wrong password type' };
        else
          return {
            error: `server asked for SCRAM authentication for user "${this.user}" but no password or SCRAM keys are known`,
          };
        return { reply: serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', this.scram.clientFirst().toString('utf8')) };
      }
      case AuthCode.SASLContinue: {
        if (!this.scram) return { error: 'unexpected SASLContinue from server' };
        const r = this.scram.handleServerFirst(body.subarray(4));
        if (!Buffer.isBuffer(r)) return { error: `SCRAM: ${r.error}` };
        return { reply: serialize.sendSCRAMClientFinalMessage(r.toString('utf8')) };
      }
      case AuthCode.SASLFinal: {
        if (!this.scram) return { error: 'unexpected SASLFinal from server' };
        const r = this.scram.verifyServerFinal(body.subarray(4));
        if (r !== true) return { error: `SCRAM: ${r.error}` };
        return { wait: true };
      }
      default:
        return { error: `unsupported authentication method ${code} requested by server` };
    }
  }

  private plainPassword(): string | null {
    return this.creds.kind === 'password' ? this.creds.password : null;
  }
}
