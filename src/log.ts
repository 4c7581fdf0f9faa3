// Logging: PgBouncer's log, and the only importer of pino.
//
// A line is an event (level, time, the connection it is about, a message in PgBouncer's words,
// structured fields) handed to every sink. The console (stdout, unless -q) and `logfile` each get
// it in the format `log_format` chooses:
//   text  2026-12-07 06:03:29.652 UTC [4242] LOG C-0x1f: p0/app@127.0.0.1:40560 login attempt: …
//         PgBouncer's own layout, so its users' grep patterns, fail2ban filters and pgBadger work.
//   json  {"level":"info","time":"…","pid":4242,"id":"C-0x1f","db":"p0","user":"app",
//          "addr":"127.0.0.1:40560","msg":"login attempt: …", …} for log pipelines (pino).
// Both carry the same time, pid, level, connection and message; JSON adds the call's fields.
// Another destination (syslog) is one more Sink in configureLog's list: it gets every LogRecord,
// and messageText() is PgBouncer's line for it without the time.
//
// Lines are buffered and written once per event-loop turn (one write for every line of a burst of
// logins), not one synchronous write per line. `flushLog()` writes what is buffered at once: a
// client is told about its failure only after the line saying why is in the file, because the
// people and programs reading the log (tail -f, fail2ban, PgBouncer's own test suite) look there
// the moment the client has the error.
import fs from 'node:fs';
import path from 'node:path';
import { pino, type Logger as PinoLogger } from 'pino';
import { now } from './clock.js';
import type { LogFormat } from './config/types.js';

export type Fields = Record<string, unknown>;

interface LogFn {
  (fields: Fields, msg: string): void;
  (msg: string): void;
}

export interface Logger {
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
}

/** The connection a line is about: PgBouncer's `C-0x…: db/user@addr:port ` prefix. */
export interface ConnFields {
  readonly id: string;
  readonly db?: string;
  readonly user?: string;
  /** Host and port, as `sockAddr` writes them. */
  readonly addr?: string;
}

/** One event as every sink receives it. A sink (a syslog one, say) formats it its own way. */
export interface LogRecord {
  readonly level: Level;
  /** Milliseconds since the epoch. */
  readonly time: number;
  readonly conn: ConnFields | null;
  readonly fields: Fields | null;
  readonly msg: string;
}

export interface Sink {
  write(rec: LogRecord): void;
  /** Write what is buffered, now. */
  flush(): void;
  /** Flush and let go of the destination (configureLog replaced it). */
  close(): void;
}

export type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
const RANK: Readonly<Record<Level, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };
/** PgBouncer's level tags (libusual logging.c): info is LOG, trace is NOISE. */
const TAG: Readonly<Record<Level, string>> = { fatal: 'FATAL', error: 'ERROR', warn: 'WARNING', info: 'LOG', debug: 'DEBUG', trace: 'NOISE' };

/** Bytes of log lines held in memory while a destination cannot be written; more are dropped. */
const LOG_BACKLOG_MAX = 16 * 1024 * 1024;
/** How soon a write that would block (a full pipe) is tried again. */
const RETRY_MS = 10;

const REDACT = ['password', 'secret', 'proof', 'clientKey', 'serverKey', '*.password', '*.secret'];

export interface LogOptions {
  readonly logfile: string | null;
  readonly format: LogFormat;
  /** The config's `verbose`: 0 = LOG and up, 1 = DEBUG, 2 or more = NOISE. */
  readonly verbose: number;
  /** The -v count of the command line, added to `verbose` (now and after setVerbose). */
  readonly cliVerbose?: number;
  /** PgBouncer's -q: nothing on the console; the logfile is unaffected. */
  readonly quiet: boolean;
  /** The least level written, instead of what `verbose` says (the demo: warnings only). */
  readonly least?: Level;
}

interface Output {
  rank: number;
  readonly sinks: readonly Sink[];
}

/** The syslog sink (net/syslog.ts) while syslog is on: kept across configureLog. */
let syslogSink: Sink | null = null;

/** The -v count, kept for setVerbose. */
let cliVerbose = 0;

function rankOf(verbose: number): number {
  return verbose >= 2 ? RANK.trace : verbose === 1 ? RANK.debug : RANK.info;
}

/** Until configureLog: PgBouncer's text on stdout. Set at the end of this module (LineWriter). */
let output: Output;

/** (Re)configure where lines go; every logger, old or new, writes through the new sinks. */
export function configureLog(opts: LogOptions): void {
  const old = output;
  const make = (w: LineWriter) => (opts.format === 'json' ? jsonSink(w) : textSink(w));
  const sinks: Sink[] = [];
  if (!opts.quiet) sinks.push(make(new LineWriter(1, 'stdout')));
  if (opts.logfile !== null) sinks.push(make(openLogfile(opts.logfile)));
  if (syslogSink !== null) sinks.push(syslogSink);
  cliVerbose = opts.cliVerbose ?? 0;
  output = { rank: opts.least !== undefined ? RANK[opts.least] : rankOf(opts.verbose + cliVerbose), sinks };
  for (const s of old.sinks) if (s !== syslogSink) s.close();
}

/** Send lines to syslog as well, or no longer (null); the syslog sink before is closed. */
export function setSyslogSink(sink: Sink | null): void {
  const before = syslogSink;
  syslogSink = sink;
  output = { rank: output.rank, sinks: [...output.sinks.filter((s) => s !== before), ...(sink === null ? [] : [sink])] };
  before?.close();
}

/** A new `verbose` from a reload or the console's SET takes effect at once, as in PgBouncer. */
export function setVerbose(verbose: number): void {
  output.rank = rankOf(verbose + cliVerbose);
}

/** Write every buffered line now (before a client is told of its failure; at exit). */
export function flushLog(): void {
  for (const s of output.sinks) s.flush();
}

class ConnLogger implements Logger {
  constructor(private readonly conn: ConnFields | null) {}

  private emit(level: Level, a: Fields | string, b?: string): void {
    if (RANK[level] < output.rank) return;
    const rec: LogRecord =
      typeof a === 'string'
        ? { level, time: Date.now(), conn: this.conn, fields: null, msg: a }
        : { level, time: Date.now(), conn: this.conn, fields: a, msg: b ?? '' };
    for (const s of output.sinks) s.write(rec);
  }

  fatal(a: Fields | string, b?: string): void {
    this.emit('fatal', a, b);
  }

  error(a: Fields | string, b?: string): void {
    this.emit('error', a, b);
  }

  warn(a: Fields | string, b?: string): void {
    this.emit('warn', a, b);
  }

  info(a: Fields | string, b?: string): void {
    this.emit('info', a, b);
  }

  debug(a: Fields | string, b?: string): void {
    this.emit('debug', a, b);
  }

  trace(a: Fields | string, b?: string): void {
    this.emit('trace', a, b);
  }
}

const root = new ConnLogger(null);

/** The logger for lines about no connection in particular. */
export function log(): Logger {
  return root;
}

/** A logger for one connection: every line carries its id, database, user and address. */
export function connLogger(conn: ConnFields): Logger {
  return new ConnLogger(conn);
}

/** PgBouncer's line for every closed client and server: the reason and the connection's age. */
export function closingBecause(reason: string, connectTime: number): string {
  return `closing because: ${reason} (age=${Math.max(0, Math.floor((now - connectTime) / 1000))}s)`;
}

/** `host:port` as PgBouncer writes it: an IPv6 address in brackets. */
export function sockAddr(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

// ------------------------------------------------------------------------------------------------
// Formats

/** PgBouncer's text line: `date time.ms zone [pid] LEVEL C-0x…: db/user@addr message`. */
export function formatText(rec: LogRecord): string {
  return `${stamp(rec.time)} [${process.pid}] ${TAG[rec.level]} ${messageText(rec)}\n`;
}

/**
 * The line without time, pid and level: `C-0x…: db/user@addr message`, what PgBouncer hands
 * syslog. A message of several lines (a stack trace) continues on lines that start with a tab, as
 * PgBouncer writes them, so every line of the log still begins with a timestamp or a tab.
 */
export function messageText(rec: LogRecord): string {
  const c = rec.conn;
  const prefix = c === null ? '' : `${c.id}: ${c.db || '(nodb)'}/${c.user || '(nouser)'}@${c.addr ?? ''} `;
  return rec.msg.includes('\n') ? `${prefix}${rec.msg.trimEnd().replace(/\n/g, '\n\t')}` : `${prefix}${rec.msg}`;
}

function textSink(w: LineWriter): Sink {
  return { write: (rec) => w.write(formatText(rec)), flush: () => w.flush(), close: () => w.close() };
}

/** pino formats the JSON (and redacts secret-named fields); the writer below writes it. */
function jsonSink(w: LineWriter): Sink {
  const p: PinoLogger = pino(
    {
      level: 'trace',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
      formatters: { level: (label: string) => ({ level: label }) },
    },
    { write: (s: string) => w.write(s) },
  );
  return {
    write: (rec) => {
      const fields = rec.conn === null ? (rec.fields ?? {}) : { ...rec.conn, ...rec.fields };
      p[rec.level](fields, rec.msg);
    },
    flush: () => w.flush(),
    close: () => w.close(),
  };
}

let stampSecond = -1;
let stampText = '';
let stampZone = '';
const zoneFormat = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' });

/** Local time with milliseconds and the zone's abbreviation (PgBouncer's format_time_ms); the
 * part up to the second is built once a second. */
function stamp(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== stampSecond) {
    stampSecond = second;
    const d = new Date(second * 1000);
    stampText =
      `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
      `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.`;
    stampZone = zoneFormat.formatToParts(d).find((p) => p.type === 'timeZoneName')?.value ?? '';
  }
  return `${stampText}${String(ms - second * 1000).padStart(3, '0')} ${stampZone}`;
}

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

// ------------------------------------------------------------------------------------------------
// Writing

/**
 * Lines for one file descriptor, buffered and written together once per event-loop turn. A
 * destination that fails (a full disk, a closed pipe) must not stop the pooler: stderr says so
 * once, and the lines are dropped while it lasts; a write that would block is retried shortly,
 * with at most LOG_BACKLOG_MAX bytes waiting.
 */
class LineWriter {
  private pending: string[] = [];
  private bytes = 0;
  private scheduled = false;
  /** Set while writes fail, so stderr hears of an outage once. */
  private failing = false;
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly name: string,
  ) {}

  write(line: string): void {
    if (this.closed || this.bytes >= LOG_BACKLOG_MAX) return;
    this.pending.push(line);
    this.bytes += line.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushLater);
    }
  }

  close(): void {
    this.flush();
    this.pending = [];
    // A retry still scheduled then finds it closed, and writes nothing to a reused descriptor.
    this.closed = true;
    if (this.fd > 2) fs.closeSync(this.fd);
  }

  private readonly flushLater = (): void => {
    this.scheduled = false;
    this.flush();
  };

  flush(): void {
    if (this.pending.length === 0 || this.closed) return;
    const buf = Buffer.from(this.pending.length === 1 ? this.pending[0]! : this.pending.join(''));
    this.pending = [];
    this.bytes = 0;
    let off = 0;
    try {
      while (off < buf.length) off += fs.writeSync(this.fd, buf, off);
      this.failing = false;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        // The reader of a pipe is behind: keep the rest for a moment later.
        this.pending.unshift(buf.subarray(off).toString());
        this.bytes = buf.length - off;
        if (!this.scheduled) {
          this.scheduled = true;
          setTimeout(this.flushLater, RETRY_MS).unref();
        }
        return;
      }
      // The lines of this batch are lost; the next batch tries again.
      if (this.failing) return;
      this.failing = true;
      try {
        fs.writeSync(2, `pgpool-ts: cannot write ${this.name}: ${(err as Error).message}; log lines are dropped while this lasts\n`);
      } catch {
        // Nowhere left to say it.
      }
    }
  }
}

/** The logfile, appended to (made with its directory if missing); PgBouncer exits when it cannot
 * open it, and so does the pooler, naming it. */
function openLogfile(file: string): LineWriter {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    return new LineWriter(fs.openSync(file, 'a'), `logfile ${file}`);
  } catch (err) {
    process.stderr.write(`pgpool-ts: cannot open logfile ${file}: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

output = { rank: RANK.info, sinks: [textSink(new LineWriter(1, 'stdout'))] };
// Whatever ends the process (process.exit after an error message, the last client of a drain),
// the lines of its last turn are written.
process.on('exit', flushLog);
