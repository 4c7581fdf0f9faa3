// PgBouncer's auth_file (userlist.txt): one `"user" "secret"` per line. Pure: text in, entries and
// problems out; load.ts reads the file and reports the problems with the rest of the config.

import type { AuthEntry, ConfigProblem } from './types.js';

export type SecretKind = 'plain' | 'md5' | 'scram-sha-256';

export interface AuthFileResult {
  readonly entries: ReadonlyMap<string, AuthEntry>;
  readonly problems: readonly ConfigProblem[];
}

const SCRAM_PREFIX = 'SCRAM-SHA-256$';

/** How a secret is stored, decided as PgBouncer does: `md5` + 32 hex digits is an MD5 hash, a
 * `SCRAM-SHA-256$…` string is a SCRAM verifier, anything else is the password itself. */
export function secretKind(secret: string): SecretKind {
  if (/^md5[0-9a-f]{32}$/.test(secret)) return 'md5';
  if (secret.startsWith(SCRAM_PREFIX)) return 'scram-sha-256';
  return 'plain';
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, both keys 32 bytes (SHA-256).
 * PgBouncer would quietly take a broken verifier for a plain password and every login would
 * fail; saying so at load time is kinder. */
function scramProblem(secret: string): string | null {
  const m = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(secret);
  if (m === null) return 'malformed SCRAM secret (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)';
  const [, iterations = '', salt = '', storedKey = '', serverKey = ''] = m;
  if (Number(iterations) < 1) return 'malformed SCRAM secret (iteration count must be at least 1)';
  if (!BASE64.test(salt)) return 'malformed SCRAM secret (salt is not base64)';
  for (const key of [storedKey, serverKey]) {
    if (!BASE64.test(key) || Buffer.from(key, 'base64').length !== 32) {
      return 'malformed SCRAM secret (StoredKey and ServerKey must be 32 bytes of base64)';
    }
  }
  return null;
}

/** Read one `"…"` field starting at `text[start]` (which must be `"`); `""` stands for one `"`.
 * Returns the field and the index just past its closing quote, or null if it never closes. */
function readQuoted(text: string, start: number): { value: string; end: number } | null {
  let value = '';
  let i = start + 1;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      if (text[i + 1] !== '"') return { value, end: i + 1 };
      value += '"';
      i += 2;
    } else {
      value += c;
      i++;
    }
  }
  return null;
}

/** Parse userlist text. `file` only labels problems. A user listed twice keeps the later secret. */
export function parseAuthFile(text: string, file: string): AuthFileResult {
  const entries = new Map<string, AuthEntry>();
  const problems: ConfigProblem[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = index + 1;
    const problem = (message: string): void => {
      problems.push({ file, line, setting: 'auth_file', message });
    };
    const body = raw.trimStart();
    if (body === '' || body.startsWith(';') || body.startsWith('#')) return;
    if (!body.startsWith('"')) {
      problem('expected "user" "secret"');
      return;
    }
    const user = readQuoted(body, 0);
    if (user === null) {
      problem('unterminated quoted user name');
      return;
    }
    const rest = body.slice(user.end);
    const secretStart = rest.search(/\S/);
    if (!/^\s/.test(rest) || secretStart < 0 || rest[secretStart] !== '"') {
      problem(`expected a quoted secret after "${user.value}"`);
      return;
    }
    const secret = readQuoted(rest, secretStart);
    if (secret === null) {
      problem(`unterminated quoted secret for "${user.value}"`);
      return;
    }
    if (user.value === '') {
      problem('empty user name');
      return;
    }
    if (secretKind(secret.value) === 'scram-sha-256') {
      const bad = scramProblem(secret.value);
      if (bad !== null) {
        problem(`${bad} for "${user.value}"`);
        return;
      }
    }
    entries.set(user.value, { user: user.value, secret: secret.value });
  });
  return { entries, problems };
}
