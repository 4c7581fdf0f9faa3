// Logging: the only importer of pino. JSON lines with a stable shape; connection events carry the
// connection id (C-…/S-…), database, user and address as fields, and the message uses PgBouncer's
// wording so operators' grep patterns keep working. Secrets are redacted by key name.
import { createRequire } from 'node:module';
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** Bytes of log lines held in memory while the logfile cannot be written. */
const LOG_BACKLOG_MAX = 16 * 1024 * 1024;

const REDACT = ['password', 'secret', 'proof', 'clientKey', 'serverKey', '*.password', '*.secret'];

let root: Logger = makeLogger(null, 0);

function makeLogger(logfile: string | null, verbose: number): Logger {
  const level = verbose >= 2 ? 'trace' : verbose === 1 ? 'debug' : 'info';
  const options = {
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT, censor: '[redacted]' },
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (logfile === null) return pino(options, (process.stdout.isTTY && prettyStream()) || pino.destination({ fd: 1, sync: false }));
  const dest = pino.destination({ dest: logfile, append: true, mkdir: true, sync: false, maxLength: LOG_BACKLOG_MAX });
  // A logfile that cannot be written (disk full, a mount gone) must not stop the pooler: stderr
  // says so once, and lines beyond LOG_BACKLOG_MAX waiting for the disk are dropped.
  let told = false;
  dest.on('error', (err: Error) => {
    if (told) return;
    told = true;
    // sonic-boom retries a failing synchronous flush forever (ENOSPC included), and pino runs one
    // at exit: that would hang every shutdown from now on. The lines still waiting are given up.
    dest.flushSync = () => undefined;
    const line = { level: 'error', time: new Date().toISOString(), pid: process.pid, msg: `cannot write logfile ${logfile}: ${err.message}; log lines are dropped while this lasts` };
    process.stderr.write(`${JSON.stringify(line)}\n`);
  });
  return pino(options, dest as DestinationStream);
}

/**
 * A person at a terminal gets readable lines from pino-pretty (an optional dependency, in-process
 * rather than pino's worker-thread transport); anything else — a pipe, a file, a container log
 * collector — gets the JSON lines. Null when pino-pretty is not installed.
 */
function prettyStream(): DestinationStream | null {
  try {
    const pretty = createRequire(import.meta.url)('pino-pretty') as (opts: object) => DestinationStream;
    return pretty({ colorize: true, sync: true, translateTime: 'SYS:standard', ignore: 'pid,hostname' });
  } catch {
    return null;
  }
}

/** (Re)configure the root logger; existing child loggers keep the old one, which is harmless. */
export function configureLog(logfile: string | null, verbose: number, quiet = false): void {
  root = makeLogger(logfile, verbose);
  if (quiet) root.level = 'warn';
}

export function log(): Logger {
  return root;
}

/** A logger for one connection: every line carries its id, database, user and address. */
export function connLogger(fields: { id: string; db?: string; user?: string; addr?: string }): Logger {
  return root.child(fields);
}

/** Flush buffered lines before the process exits. */
export function flushLog(): void {
  try {
    root.flush();
  } catch {
    // A logfile that cannot be written must not stop a shutdown.
  }
}
