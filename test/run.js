#!/usr/bin/env node
// `npm test` entry (after `tsc -p .`): runs the compiled tests with node's built-in runner.
//
// One node:test run over every file, one file at a time. Integration and regression files each
// start their own PostgreSQL and pooler processes: on a 2-core machine, parallel clusters turn
// timing-sensitive tests (timeouts, backpressure) into flaky ones, and the unit files take seconds
// either way.
//
// The relay runs on Node's stream handles, or on net.Socket's stream API where those fail the
// startup probe (src/net/io.ts). A second run takes the integration files that move bytes through
// the relay in every way the two paths differ (pool modes, drivers, COPY with backpressure, TLS
// on both sides, cancels, parameters, server faults) again with PGPOOL_RELAY=streams. That run
// also accepts TCP connections with Node's server (PGPOOL_ACCEPT=node), the path taken without the
// native addon's accept thread (src/net/listener.ts). Not all of
// them: CI (with PgBouncer's suite) must stay under 15 minutes on 2 cores, and the other files test
// login, config, the console and limits, which the relay path does not touch; prepared statements
// and hostile input are framed and rewritten by the same relay code on either path. The second
// run prints its own summary.
//
// Test files are listed here rather than by passing directories to `node --test`: Node 20 treats
// every .js under a directory named `test` as a test file, which would include dist/test/support.
//
//   node test/run.js                 all suites
//   node test/run.js <file.js>...    just those files, one at a time
//
// Pooler logs (issue #4: passwords, SCRAM proofs and secrets never appear in any log line). Every
// pooler a test starts writes its output to a file under one directory for the run, which this
// script makes in the temp dir and passes on in PGPOOL_TEST_LOG_DIR (test/support/test-logs.ts;
// a test file run without this script gets a temp dir of its own). The support code notes there
// too every secret it meets: the cluster roles' passwords, each auth_file entry, each password= of
// an ini, and those a test names. After all the other files (node runs the files of one run
// sorted by path, hence the directory name), dist/test/zz-last/no-secrets-in-logs.test.js searches every
// log line for every secret and for SCRAM proofs, verifiers, keys and md5 hashes by their shape,
// and fails naming the file and line of each hit. So that it cannot pass on logs that went
// elsewhere, it also fails when a test file that starts poolers (every one outside unit/, listed
// in PGPOOL_TEST_LOG_FROM) left no log, or when it read fewer than PGPOOL_TEST_LOG_MIN_FILES files
// or PGPOOL_TEST_LOG_MIN_BYTES bytes, set here from that list. It runs after a selection too,
// unless only unit files were selected. The directory is
// removed at the end unless PGPOOL_TEST_KEEP=1 (its path is printed) or it was given in
// PGPOOL_TEST_LOG_DIR.
//
// Skipped tests: each t.skip() gives its reason, which spec/tap print next to the test; a second
// reporter (test/skip-summary.js) lists every skipped test with its file and reason again, on
// stderr at the end of each run, and flags a skip that gave none.
//
// Env: PGPOOL_TEST_TIMEOUT_MS (per test, default 120000), PGPOOL_TEST_PG_BIN, PGPOOL_TEST_KEEP,
// PGPOOL_TEST_LOG_DIR, PGPOOL_RELAY (streams: everything on the stream API, and no second run).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'test');
const timeoutMs = process.env.PGPOOL_TEST_TIMEOUT_MS ?? '120000';
const logCheck = path.join(dist, 'zz-last', 'no-secrets-in-logs.test.js');
/** The least output a test file outside unit/ leaves in the log directory: every one starts a
 * pooler (or a stand-in: harness.test.js) that prints at least where it listens. */
const MIN_LOG_BYTES_PER_FILE = 32;

/** *.test.js under dir, recursively, sorted for a stable order; [] if dir does not exist. */
function testFiles(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.test.js'))
    .map((e) => path.join(e.parentPath ?? e.path, e.name))
    .sort();
}

let child = null;
// The test processes clean up their clusters and poolers on the way out: pass SIGTERM on and
// wait for them. Ctrl-C already reaches them through the terminal's process group.
process.on('SIGTERM', () => child?.kill('SIGTERM'));
process.on('SIGINT', () => undefined);

// node's own choice when no reporter is named, on stdout; the summary of skipped tests on stderr,
// out of the way of a TAP parser.
const reporters = [
  `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`, '--test-reporter-destination=stdout',
  `--test-reporter=${pathToFileURL(path.join(root, 'test', 'skip-summary.js'))}`, '--test-reporter-destination=stderr',
];

function runPhase(name, files, concurrency, env = process.env) {
  if (files.length === 0) return Promise.resolve(0);
  console.error(`run.js: ${name}: ${files.length} file(s), concurrency ${concurrency}`);
  const args = ['--test', `--test-concurrency=${concurrency}`, `--test-timeout=${timeoutMs}`, ...reporters, ...files];
  return new Promise((resolve) => {
    child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env });
    child.on('error', (e) => {
      console.error(`run.js: cannot start node: ${e.message}`);
      resolve(1);
    });
    child.on('exit', (code, signal) => {
      child = null;
      resolve(code ?? (signal === null ? 1 : 128 + (os.constants.signals[signal] ?? 0)));
    });
  });
}

const explicit = process.argv.slice(2).map((f) => path.resolve(f));
const selected = explicit.filter((f) => f !== logCheck);
const [name, files] = explicit.length > 0
  ? ['selected', selected]
  : ['all', ['unit', 'integration', 'regress'].flatMap((d) => testFiles(path.join(dist, d)))];

if (explicit.length === 0 && files.length === 0) {
  console.error(`run.js: no *.test.js under ${dist}; did \`tsc -p .\` run?`);
  process.exit(1);
}

// The files that start poolers: each must have left at least one log (named after it).
const startPoolers = files.filter((f) => !f.startsWith(path.join(dist, 'unit') + path.sep)).map((f) => path.basename(f, '.js'));
const checkLogs = startPoolers.length > 0 || explicit.includes(logCheck);
const givenLogDir = process.env.PGPOOL_TEST_LOG_DIR;
const logDir = givenLogDir || fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-test-logs-'));
const env = {
  ...process.env,
  PGPOOL_TEST_LOG_DIR: logDir,
  PGPOOL_TEST_LOG_FROM: startPoolers.join(','),
  PGPOOL_TEST_LOG_MIN_FILES: String(Math.max(1, startPoolers.length)),
  PGPOOL_TEST_LOG_MIN_BYTES: String(Math.max(1, startPoolers.length) * MIN_LOG_BYTES_PER_FILE),
};

if (checkLogs && !fs.existsSync(logCheck)) {
  console.error(`run.js: ${logCheck} is missing; did \`tsc -p .\` run?`);
  process.exit(1);
}
/** The integration files that run a second time with PGPOOL_RELAY=streams (see above). */
const STREAMS_RUN = ['pool-modes', 'drivers', 'copy', 'tls-client', 'tls-server', 'cancel', 'params', 'failures'];
const streamsFiles = explicit.length > 0 || process.env.PGPOOL_RELAY !== undefined
  ? []
  : STREAMS_RUN.map((f) => path.join(dist, 'integration', `${f}.test.js`));
for (const f of streamsFiles) if (!fs.existsSync(f)) console.error(`run.js: ${f} is missing for the PGPOOL_RELAY=streams run`);
// The log search goes last, over the logs of both runs.
let code = await runPhase(name, checkLogs && streamsFiles.length === 0 ? [...files, logCheck] : files, 1, env);
if (streamsFiles.length > 0) {
  const again = await runPhase('relay on streams, accept on the event loop (PGPOOL_RELAY=streams PGPOOL_ACCEPT=node)',
    checkLogs ? [...streamsFiles, logCheck] : streamsFiles, 1, { ...env, PGPOOL_RELAY: 'streams', PGPOOL_ACCEPT: 'node' });
  code ||= again;
}
if (!checkLogs) {
  console.error('run.js: pooler logs not searched: the selected files start no pooler (unit tests only)');
}
if (process.env.PGPOOL_TEST_KEEP === '1' || givenLogDir) console.error(`run.js: pooler logs kept in ${logDir}`);
else fs.rmSync(logDir, { recursive: true, force: true });
process.exit(code);
