// auth_file secrets computed from their definitions (PostgreSQL's md5 secret, RFC 5803 SCRAM
// verifiers) and the SCRAM keys behind them. Deliberately independent of src/auth, so that the
// pooler's SCRAM is never checked with itself.

import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';

export const md5hex = (data: string | Buffer): string => createHash('md5').update(data).digest('hex');
export const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
export const hmac = (key: Buffer, data: string | Buffer): Buffer => createHmac('sha256', key).update(data).digest();

/** PostgreSQL's md5 secret: "md5" + md5(password || user). */
export function md5Secret(user: string, password: string): string {
  return 'md5' + md5hex(password + user);
}

export interface ScramKeys {
  salted: Buffer;
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** SaltedPassword and the keys derived from it (RFC 5802; ASCII passwords need no SASLprep). */
export function scramKeys(password: string, salt: Buffer, iterations: number): ScramKeys {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  return { salted, clientKey, storedKey: sha256(clientKey), serverKey: hmac(salted, 'Server Key') };
}

/** RFC 5803 / PostgreSQL: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>. */
export function scramSecret(password: string, salt: Buffer = randomBytes(16), iterations = 4096): string {
  const k = scramKeys(password, salt, iterations);
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${k.storedKey.toString('base64')}:${k.serverKey.toString('base64')}`;
}

/** StoredKey and ServerKey (base64) of a SCRAM verifier, or null when `secret` is not one. */
export function scramSecretParts(secret: string): { storedKey: string; serverKey: string } | null {
  const m = /^SCRAM-SHA-256\$\d+:[^$]+\$([^:]+):(.+)$/.exec(secret);
  return m === null ? null : { storedKey: m[1]!, serverKey: m[2]! };
}
