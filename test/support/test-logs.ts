// Every pooler's output in a test run, one file per process, under one directory, so that the last
// test of the run (test/zz-last/no-secrets-in-logs.test.ts, issue #4) can search all of it for the
// passwords, hashes and keys the suite used. Next to the logs, the secrets themselves, as the
// support code meets them: auth_file entries and [databases] passwords (pooler.ts), PASSWORD
// literals sent to a cluster (pg-cluster.ts), and whatever a test names with noteSecret().
//
// test/run.js makes the directory and passes it in PGPOOL_TEST_LOG_DIR; a test file run on its own
// gets a temp dir of its own, removed as the process exits. PGPOOL_TEST_KEEP=1 keeps either.
//
//   <dir>/pooler/<test file>.<pid>.<n>.<what>.log   the stdout and stderr lines of one process
//   <dir>/secrets/<test file>.<pid>.jsonl           one {"label", "value"} a line

import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { md5Secret, scramSecretParts } from './secrets.js';

export const LOG_DIR_ENV = 'PGPOOL_TEST_LOG_DIR';
export const POOLER_LOGS = 'pooler';
export const SECRETS = 'secrets';
/** Shorter values are not noted ('x' stands in any text); the search reports whole tokens only. */
export const MIN_SECRET_LENGTH = 5;

let runDir: string | null = null;

/** The directory of this run (PGPOOL_TEST_LOG_DIR, else a temp dir of this process), made on first use. */
export function testLogDir(): string {
  if (runDir !== null) return runDir;
  const given = process.env[LOG_DIR_ENV];
  let dir: string;
  if (given !== undefined && given !== '') {
    dir = given;
  } else {
    const own = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-test-logs-'));
    process.on('exit', () => {
      if (process.env.PGPOOL_TEST_KEEP !== '1') fs.rmSync(own, { recursive: true, force: true });
    });
    dir = own;
  }
  fs.mkdirSync(path.join(dir, POOLER_LOGS), { recursive: true });
  fs.mkdirSync(path.join(dir, SECRETS), { recursive: true });
  runDir = dir;
  return dir;
}

/** `<test file>.<pid>`: node --test runs each file in a process of its own, the file as argv[1]. */
const tag = `${path.basename(process.argv[1] ?? 'node').replace(/\.js$/, '')}.${process.pid}`;
let logCount = 0;

/** One log file of the run; lines are written at once (synchronously), so nothing is lost to an exit. */
export class OutputLog {
  readonly path: string;
  private fd: number | null;

  constructor(what: string) {
    this.path = path.join(testLogDir(), POOLER_LOGS, `${tag}.${++logCount}.${what.replace(/[^\w-]+/g, '_')}.log`);
    this.fd = fs.openSync(this.path, 'a');
  }

  line(text: string): void {
    if (this.fd !== null) fs.writeSync(this.fd, `${text}\n`);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** Copy the stdout and stderr lines of a pooler started by hand into a log of the run. */
export function keepOutput(child: ChildProcess, what: string): void {
  const log = new OutputLog(what);
  for (const stream of [child.stdout, child.stderr]) {
    if (stream !== null) readline.createInterface({ input: stream }).on('line', (l) => log.line(l));
  }
  child.once('close', () => log.close());
}

/** The output of a pooler run to completion (stdout, then stderr), as a log of the run. */
export function saveOutput(what: string, ...texts: string[]): void {
  const log = new OutputLog(what);
  for (const text of texts) for (const l of text.split('\n')) if (l !== '') log.line(l);
  log.close();
}

// ------------------------------------------------------------------------------------------------
// The secrets the suite uses

const noted = new Set<string>();

/** A value that must appear in no pooler log line; `label` names it in a failure. */
export function noteSecret(label: string, value: string): void {
  if (value.length < MIN_SECRET_LENGTH || noted.has(value)) return;
  noted.add(value);
  fs.appendFileSync(path.join(testLogDir(), SECRETS, `${tag}.jsonl`), `${JSON.stringify({ label, value })}\n`);
}

/** A password of `user` and the md5 secret made of it. */
export function notePassword(label: string, user: string, password: string): void {
  noteSecret(label, password);
  if (password.length >= MIN_SECRET_LENGTH) noteHash(`${label}, as an md5 secret`, md5Secret(user, password));
}

function noteHash(label: string, md5: string): void {
  noteSecret(label, md5);
  noteSecret(label, md5.slice(3));
}

/** Every secret of an auth_file (`"user" "secret"` lines): a plaintext password and its md5 secret;
 * an md5 secret (with and without its prefix); a SCRAM verifier, its StoredKey and its ServerKey. */
export function noteAuthFile(text: string, source: string): void {
  for (const line of text.split('\n')) {
    const m = /^\s*"((?:[^"]|"")*)"\s+"((?:[^"]|"")*)"/.exec(line);
    if (m === null) continue;
    const user = m[1]!.replace(/""/g, '"');
    const secret = m[2]!.replace(/""/g, '"');
    const label = `${source}: auth_file secret of ${user}`;
    const scram = scramSecretParts(secret);
    if (scram !== null) {
      noteSecret(label, secret);
      noteSecret(`${label} (StoredKey)`, scram.storedKey);
      noteSecret(`${label} (ServerKey)`, scram.serverKey);
    } else if (/^md5[0-9a-f]{32}$/.test(secret)) {
      noteHash(label, secret);
    } else {
      notePassword(label, user, secret);
    }
  }
}

/** The password=… values of an ini's connection strings ([databases], [users]). */
export function noteIniPasswords(text: string, source: string): void {
  for (const m of text.matchAll(/\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|[^\s'"]+)/gi)) {
    const raw = m[1]!;
    const value = raw.startsWith("'") ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
    noteSecret(`${source}: password= in the ini`, value);
  }
}

/** The passwords a query gives roles (CREATE/ALTER ROLE|USER name … PASSWORD '…'). */
export function noteRolePasswords(sql: string, source: string): void {
  for (const m of sql.matchAll(/\b(?:ROLE|USER)\s+"?([\w$]+)"?[^;]*?\bPASSWORD\s+'((?:[^']|'')*)'/gi)) {
    const role = m[1]!;
    notePassword(`${source}: password of role ${role}`, role, m[2]!.replace(/''/g, "'"));
  }
}

