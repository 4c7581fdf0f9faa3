// Log lines to the local syslog daemon (syslog = 1), as PgBouncer's syslog(3) sends them: one
// RFC 3164 datagram per line of level LOG and up, `<PRI>Mmm dd hh:mm:ss ident[pid]: message`, the
// message being PgBouncer's line without time, pid and level. They go to syslog_socket (/dev/log)
// over a unix datagram socket, which Node cannot open: the native addon does.
//
// The daemon may be missing or restart: a send that fails closes the socket, the next line after
// a second tries to connect again, and stderr hears of the outage once. Lines sent while its queue
// is full are dropped rather than blocking the pooler.
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import { messageText, setSyslogSink, type Level, type LogRecord, type Sink } from '../log.js';
import { nativeFunction } from './native.js';

const FACILITY: Readonly<Record<string, number>> = {
  auth: 4, authpriv: 10, daemon: 3, user: 1,
  local0: 16, local1: 17, local2: 18, local3: 19, local4: 20, local5: 21, local6: 22, local7: 23,
};
/** PgBouncer's mapping (libusual logging.c): FATAL is LOG_CRIT, DEBUG and NOISE never get here. */
const SEVERITY: Readonly<Record<Level, number>> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };
/** PgBouncer's cf_syslog_level is LOG: debug lines stay out of syslog whatever `verbose` says. */
const SENT: ReadonlySet<Level> = new Set(['fatal', 'error', 'warn', 'info']);
/** Longer messages are cut: a datagram larger than the daemon takes would be refused whole. */
const MAX_MESSAGE = 8192;
const RECONNECT_MS = 1000;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const PURPOSE = 'syslog = 1 has no effect';

/** RFC 3164's timestamp, local time: `Dec  7 08:51:21`. */
function timestamp(ms: number): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** One datagram as syslog(3) makes it. */
export function syslogLine(rec: LogRecord, ident: string, facility: number): string {
  const text = messageText(rec);
  const msg = text.length > MAX_MESSAGE ? text.slice(0, MAX_MESSAGE) : text;
  return `<${facility * 8 + SEVERITY[rec.level]}>${timestamp(rec.time)} ${ident}[${process.pid}]: ${msg}`;
}

class SyslogSink implements Sink {
  private fd = -1;
  private lastTry = 0;
  private failing = false;

  constructor(
    private readonly socket: string,
    private readonly ident: string,
    private readonly facility: number,
    private readonly connect: (path: string) => number,
    private readonly send: (fd: number, data: Buffer) => boolean,
  ) {}

  write(rec: LogRecord): void {
    if (!SENT.has(rec.level)) return;
    if (this.fd < 0 && !this.open()) return;
    try {
      this.send(this.fd, Buffer.from(syslogLine(rec, this.ident, this.facility)));
      this.failing = false;
    } catch (err) {
      this.report(err as Error);
      this.close();
    }
  }

  private open(): boolean {
    const t = Date.now();
    if (t - this.lastTry < RECONNECT_MS) return false;
    this.lastTry = t;
    try {
      this.fd = this.connect(this.socket);
      return true;
    } catch (err) {
      this.report(err as Error);
      return false;
    }
  }

  /** To stderr, once per outage: a log line about the log would come back here. */
  private report(err: Error): void {
    if (this.failing) return;
    this.failing = true;
    try {
      fs.writeSync(2, `pgpool-ts: cannot send to syslog (${this.socket}): ${err.message}; syslog lines are dropped while this lasts\n`);
    } catch {
      // Nowhere left to say it.
    }
  }

  flush(): void {
    // Each line is sent at once.
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/** The settings the running sink was made for (a reload that changes none keeps it). */
let current = '';

/** Start, change or stop sending to syslog as `cfg` says; why it cannot, or null. */
export function configureSyslog(cfg: Config): string | null {
  const wanted = cfg.syslog ? JSON.stringify([cfg.syslogSocket, cfg.syslogIdent, cfg.syslogFacility]) : '';
  if (wanted === current) return null;
  current = wanted;
  const off = (why: string | null): string | null => {
    setSyslogSink(null);
    if (why !== null) current = '';
    return why;
  };
  if (!cfg.syslog) return off(null);
  const connect = nativeFunction('dgramConnect', PURPOSE);
  if ('error' in connect) return off(connect.error);
  const send = nativeFunction('dgramSend', PURPOSE);
  if ('error' in send) return off(send.error);
  setSyslogSink(new SyslogSink(cfg.syslogSocket, cfg.syslogIdent, FACILITY[cfg.syslogFacility] ?? FACILITY.daemon!, connect.fn, send.fn));
  return null;
}
