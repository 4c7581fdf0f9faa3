// Logging: the only importer of pino. JSON lines with a stable shape; connection events carry the
// connection id (C-…/S-…), database, user and address as fields, and the message uses PgBouncer's
// wording so operators' grep patterns keep working. Secrets are redacted by key name.
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

const REDACT = ['password', 'secret', 'proof', 'clientKey', 'serverKey', '*.password', '*.secret'];

let root: Logger = makeLogger(null, 0);

function makeLogger(logfile: string | null, verbose: number): Logger {
  const level = verbose >= 2 ? 'trace' : verbose === 1 ? 'debug' : 'info';
  const dest: DestinationStream = logfile
    ? pino.destination({ dest: logfile, append: true, mkdir: true, sync: false })
    : pino.destination({ fd: 1, sync: false });
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
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
