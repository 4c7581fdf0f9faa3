// The log's two formats and its writer (src/log.ts): PgBouncer's text line, the JSON line with the
// same fields, and lines buffered until the end of the event-loop turn unless flushed. The order
// "log line before the client's error" is checked end to end in test/integration/log.test.ts.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { closingBecause, configureLog, connLogger, flushLog, formatText, log, setVerbose, sockAddr, type LogRecord } from '../../src/log.js';
import { parseLogLine } from '../support/suite.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpool-log-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** Route the log to a fresh file (never stdout: it carries the test runner's report). */
function logTo(format: 'text' | 'json', verbose = 0): string {
  const file = path.join(dir, `log-${++files}.log`);
  configureLog({ logfile: file, format, verbose, quiet: true });
  return file;
}

const read = (file: string) => fs.readFileSync(file, 'utf8');

describe("PgBouncer's text line", () => {
  const at = new Date(2026, 11, 7, 6, 3, 29, 652).getTime();
  const rec = (over: Partial<LogRecord>): LogRecord => ({ level: 'info', time: at, conn: null, fields: null, msg: 'hello', ...over });

  it('time with milliseconds and zone, [pid], level tag, connection prefix, message', () => {
    const line = formatText(rec({ conn: { id: 'C-0x1f', db: 'p0', user: 'app', addr: '127.0.0.1:40560' }, msg: 'login attempt: db=p0 user=app tls=no replication=no' }));
    const zone = /^\S+ \S+ (\S+)/.exec(line)?.[1];
    assert.ok(zone !== undefined && zone !== '', line);
    assert.equal(line, `2026-12-07 06:03:29.652 ${zone} [${process.pid}] LOG C-0x1f: p0/app@127.0.0.1:40560 login attempt: db=p0 user=app tls=no replication=no\n`);
  });

  it("PgBouncer's level tags", () => {
    const tags = (['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const).map((level) => / \[\d+\] (\S+) /.exec(formatText(rec({ level })))?.[1]);
    assert.deepEqual(tags, ['FATAL', 'ERROR', 'WARNING', 'LOG', 'DEBUG', 'NOISE']);
  });

  it('no prefix without a connection; (nodb)/(nouser) before a login names them', () => {
    assert.match(formatText(rec({})), /\] LOG hello\n$/);
    assert.match(formatText(rec({ conn: { id: 'C-0x2', addr: '10.0.0.1:5' } })), /\] LOG C-0x2: \(nodb\)\/\(nouser\)@10\.0\.0\.1:5 hello\n$/);
  });

  it('a message of several lines continues on tab-indented lines, and ends with one newline', () => {
    const line = formatText(rec({ msg: 'uncaught exception: boom\n    at f (x.js:1)\n    at g (y.js:2)\n' }));
    assert.equal(line.split('\n').length, 4, line);
    assert.match(line, /boom\n\t {4}at f \(x\.js:1\)\n\t {4}at g \(y\.js:2\)\n$/);
  });

  it('IPv6 addresses in brackets, as PgBouncer writes them', () => {
    assert.equal(sockAddr('::1', 5432), '[::1]:5432');
    assert.equal(sockAddr('127.0.0.1', 5432), '127.0.0.1:5432');
  });

  it('closing because: reason (age=Ns)', () => {
    assert.equal(closingBecause('client close request', Date.now() - 3_500), 'closing because: client close request (age=3s)');
  });
});

describe('sinks: the logfile in either format', () => {
  it('text: a connection logger writes PgBouncer lines the test support parses back', () => {
    const file = logTo('text');
    connLogger({ id: 'S-0x3', db: 'p0', user: 'app', addr: '127.0.0.1:5432' }).warn({ sqlstate: '28P01' }, 'server login failed: FATAL password authentication failed for user "app"');
    log().info('listening on 127.0.0.1:6432');
    flushLog();
    const lines = read(file).trimEnd().split('\n').map(parseLogLine);
    assert.deepEqual(lines.map((l) => [l.level, l.id, l.db, l.user, l.addr, l.msg]), [
      ['WARNING', 'S-0x3', 'p0', 'app', '127.0.0.1:5432', 'server login failed: FATAL password authentication failed for user "app"'],
      ['LOG', undefined, undefined, undefined, undefined, 'listening on 127.0.0.1:6432'],
    ]);
  });

  it('json: the same time, pid, level, connection and message as fields, plus the call fields; secrets redacted', () => {
    const file = logTo('json');
    const before = Date.now();
    connLogger({ id: 'C-0x1f', db: 'p0', user: 'app', addr: '127.0.0.1:40560' }).info({ method: 'scram-sha-256', password: 'hunter2-xyz' }, 'login attempt: db=p0 user=app tls=no replication=no');
    flushLog();
    const o = JSON.parse(read(file)) as Record<string, unknown>;
    assert.equal(o.level, 'info');
    assert.equal(o.pid, process.pid);
    assert.ok(Date.parse(String(o.time)) >= before - 1, String(o.time));
    assert.deepEqual([o.id, o.db, o.user, o.addr, o.msg, o.method], ['C-0x1f', 'p0', 'app', '127.0.0.1:40560', 'login attempt: db=p0 user=app tls=no replication=no', 'scram-sha-256']);
    assert.equal(o.password, '[redacted]');
    assert.ok(!read(file).includes('hunter2-xyz'));
  });

  it('levels below the configured one are not written (verbose 0: no DEBUG; 2: NOISE too)', () => {
    const quiet = logTo('text', 0);
    log().debug('a debug line');
    log().info('an info line');
    flushLog();
    assert.deepEqual(read(quiet).trimEnd().split('\n').map((l) => parseLogLine(l).msg), ['an info line']);
    const noisy = logTo('text', 2);
    log().trace('a noise line');
    flushLog();
    assert.match(read(noisy), /NOISE a noise line/);
  });

  it('a new verbose (reload, SET verbose) applies at once, on top of the -v count', () => {
    const file = path.join(dir, `log-${++files}.log`);
    configureLog({ logfile: file, format: 'text', verbose: 0, cliVerbose: 1, quiet: true });
    log().trace('hidden');
    log().debug('debug with -v');
    setVerbose(1);
    log().trace('noise with -v and verbose = 1');
    setVerbose(0);
    log().trace('hidden again');
    flushLog();
    assert.deepEqual(read(file).trimEnd().split('\n').map((l) => parseLogLine(l).msg), ['debug with -v', 'noise with -v and verbose = 1']);
  });

  it('lines wait for the end of the event-loop turn (one write for a burst), unless flushed at once', async () => {
    const file = logTo('text');
    for (let i = 0; i < 100; i++) log().info(`line ${i}`);
    assert.equal(read(file), '', 'nothing written within the turn');
    await new Promise((r) => setImmediate(r));
    assert.equal(read(file).trimEnd().split('\n').length, 100);
    log().info('the reason a client is refused');
    flushLog();
    assert.match(read(file), /the reason a client is refused\n$/, 'flushLog writes at once');
  });

  it('a logfile that cannot be written: the pooler goes on, nothing thrown', () => {
    configureLog({ logfile: '/dev/full', format: 'text', verbose: 0, quiet: true });
    // Its complaint goes to stderr once; the test runner shows stderr but does not parse it.
    assert.doesNotThrow(() => {
      log().info('lost');
      flushLog();
      log().info('lost too');
      flushLog();
    });
  });
});
