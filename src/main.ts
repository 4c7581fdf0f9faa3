// Entry point: PgBouncer's command line, config loading, signals, exit codes.
//   pgpool-ts [-d] [-q] [-v] [-u user] [-c] pgbouncer.ini | --check -c FILE | -V | -h
// With no ini: the environment (DATABASE_URL / DB_HOST …), else the embedded-PostgreSQL demo.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { App, VERSION, authRules, type ShutdownMode } from './app.js';
import { ConfigError, configFromEnv, describeConfig, generatedIniFromEnv, loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { configureLog, flushLog, log } from './log.js';
import { configureSyslog } from './net/syslog.js';
import { Supervisor } from './cluster/supervisor.js';
import { WorkerLink } from './cluster/worker-link.js';
import { stripeConnectionIds } from './ids.js';
import { listenerProblem } from './net/listener.js';
import { buildTlsContexts } from './net/tls.js';

const USAGE = `pgpool-ts ${VERSION}: a PgBouncer-compatible PostgreSQL connection pooler

Usage: pgpool-ts [OPTION]... [-c] CONFIG_FILE
  -c, --config FILE  the pgbouncer.ini to use
  --check            validate the config and every file it names, then exit
  -d, --daemon       run in the background (needs pidfile)
  -q, --quiet        log only warnings and errors
  -v, --verbose      more logging (repeat for more)
  -u, --user USER    drop privileges to USER after binding
  -V, --version      print the version and exit
  -h, --help         print this help and exit
Without a config file, the environment (DATABASE_URL or DB_HOST, POOL_MODE, …) is used;
without that either, a demo starts on an embedded PostgreSQL.`;

interface Args {
  config: string | null;
  check: boolean;
  daemon: boolean;
  quiet: boolean;
  verbose: number;
  user: string | null;
}

function die(msg: string): never {
  // The log's lines so far first, so the reason is the last thing said.
  flushLog();
  process.stderr.write(`pgpool-ts: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { config: null, check: false, daemon: false, quiet: false, verbose: 0, user: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = (): string => argv[++i] ?? die(`option ${arg} needs a value`);
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else if (arg === '-V' || arg === '--version') {
      process.stdout.write(`pgpool-ts ${VERSION}\n`);
      process.exit(0);
    } else if (arg === '-c' || arg === '--config') a.config = next();
    else if (arg === '--check') a.check = true;
    else if (arg === '-d' || arg === '--daemon') a.daemon = true;
    else if (arg === '-q' || arg === '--quiet') a.quiet = true;
    else if (/^-v+$/.test(arg)) a.verbose += arg.length - 1;
    else if (arg === '--verbose') a.verbose++;
    else if (arg === '-u' || arg === '--user') a.user = next();
    else if (arg === '-R' || arg === '--reboot') die('-R (online restart) is not supported: use SHUTDOWN WAIT_FOR_CLIENTS and a rolling restart');
    else if (arg.startsWith('-')) die(`unknown option ${arg}\n${USAGE}`);
    else if (a.config === null) a.config = arg;
    else die(`unexpected argument ${arg}`);
  }
  return a;
}

function load(args: Args): Config | null {
  try {
    if (args.config !== null) return loadConfig(path.resolve(args.config));
    return configFromEnv(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\n');
      process.exit(1);
    }
    return die((err as Error).message);
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.check) {
    if (args.config === null) {
      const ini = generatedIniFromEnv(process.env);
      if (ini === null) die('--check needs a config file (-c FILE) or DATABASE_URL/DB_HOST in the environment');
      process.stdout.write(ini);
    }
    const cfg = load(args);
    if (cfg === null) die('no configuration');
    try {
      authRules(cfg, (line) => process.stderr.write(`${line}\n`));
    } catch (err) {
      die((err as Error).message);
    }
    try {
      buildTlsContexts(cfg, true);
    } catch (err) {
      die(`${cfg.configFile ?? '<environment>'}: ${(err as Error).message}`);
    }
    const listening = listenerProblem(cfg);
    if (listening !== null) die(`${cfg.configFile ?? '<environment>'}: ${listening.setting}: ${listening.message}`);
    process.stdout.write(describeConfig(cfg) + '\n');
    process.exit(0);
  }
  const cfg = load(args);
  if (cfg === null) {
    const { runDemo } = await import('./demo.js');
    return runDemo();
  }
  // A worker of a multi-worker instance: its main process started it (cluster/supervisor.ts).
  const link = WorkerLink.fromEnv(process.env);
  if (args.daemon && link === null) return daemonize(cfg);
  configureLog({ logfile: cfg.logfile, format: cfg.logFormat, verbose: cfg.verbose, cliVerbose: args.verbose, quiet: args.quiet });
  const noSyslog = configureSyslog(cfg);
  if (link === null) log().info(`process up: pgpool-ts ${VERSION}, node ${process.version}, tls: OpenSSL ${process.versions.openssl}`);
  else log().info(`worker ${link.index} of ${link.count} up`);
  if (noSyslog !== null && link === null) log().warn(noSyslog);
  if (cfg.pidfile !== null && link === null) writePidfile(cfg.pidfile);
  const runAs = args.user ?? cfg.user;
  if (cfg.workers > 1 && link === null) {
    await runInstance(cfg, runAs);
  } else {
    if (link !== null) stripeConnectionIds(link.index, link.count);
    let app: App;
    try {
      app = new App(cfg, link);
    } catch (err) {
      die((err as Error).message);
    }
    // Before the port opens: a SIGTERM sent as soon as it accepts (an orchestrator, a test) must
    // find the shutdown handler, not Node's default of dying by the signal.
    installSignals(app);
    try {
      await app.start();
    } catch (err) {
      die(`could not listen: ${(err as Error).message}`);
    }
    if (runAs !== null) dropPrivileges(runAs);
    await app.exited;
  }
  if (cfg.pidfile !== null && link === null) fs.rmSync(cfg.pidfile, { force: true });
  log().info('shutdown complete');
  flushLog();
  process.exit(0);
}

/** `workers` > 1: this process starts the workers and runs the instance until it stops. */
async function runInstance(cfg: Config, runAs: string | null): Promise<void> {
  // The workers check their config themselves; this fails at once on what they would all fail on.
  const problem = listenerProblem(cfg);
  if (problem !== null) die(`${cfg.configFile ?? '<environment>'}: ${problem.setting}: ${problem.message}`);
  const instance = new Supervisor(cfg, process.argv[1]!, process.argv.slice(2));
  instance.installSignals();
  try {
    await instance.start();
  } catch (err) {
    die(`could not start: ${(err as Error).message}`);
  }
  if (runAs !== null) dropPrivileges(runAs);
  await instance.exited;
}

function installSignals(app: App): void {
  // PgBouncer's words for each signal (main.c), so its users' alerts keep matching.
  const stop = (signal: string, mode: ShutdownMode, words: string) => () => {
    // A second signal during a shutdown exits at once (PgBouncer 1.23+).
    if (app.stopping) {
      log().info(`got ${signal} while shutting down, fast exit`);
      void app.stop('immediate');
      return;
    }
    log().info(`got ${signal}, shutting down, ${words}`);
    void app.stop(mode);
  };
  process.on('SIGTERM', stop('SIGTERM', 'wait_for_clients', 'waiting for all clients disconnect'));
  process.on('SIGINT', stop('SIGINT', 'wait_for_servers', 'waiting for all servers connections to be released'));
  process.on('SIGQUIT', () => {
    log().info('got SIGQUIT, fast exit');
    void app.stop('immediate');
  });
  process.on('SIGHUP', () => {
    log().info('got SIGHUP, re-reading config');
    app.reload();
  });
  // PAUSE and RESUME go through the console, so a signal does exactly what the command does
  // (released servers are closed while paused; SIGUSR2 is ignored during a shutdown).
  process.on('SIGUSR1', () => {
    const reg = app.registry;
    if (reg.pausedAll || reg.suspended) return log().info('got SIGUSR1, but already paused/suspended');
    log().info('got SIGUSR1, pausing all activity');
    app.console.pauseAll();
  });
  process.on('SIGUSR2', () => {
    const reg = app.registry;
    if (app.stopping) return log().info('got SIGUSR2 while shutting down, ignoring');
    if (reg.suspended) log().info('got SIGUSR2, continuing from SUSPEND');
    else if (reg.pausedAll || reg.paused.size > 0) log().info('got SIGUSR2, continuing from PAUSE');
    else return log().info('got SIGUSR2, but not paused/suspended');
    app.console.resumeAll();
  });
  process.on('SIGPIPE', () => undefined);
}

function writePidfile(file: string): void {
  if (fs.existsSync(file)) {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    if (pid > 0 && isAlive(pid)) die(`pidfile ${file} names a running process (${pid})`);
  }
  fs.writeFileSync(file, `${process.pid}\n`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function daemonize(cfg: Config): void {
  if (cfg.pidfile === null) die('-d needs pidfile in the config');
  // Its stdout goes nowhere: -q spares it the console lines (PgBouncer's daemon closes stderr).
  const argv = [...process.argv.slice(1).filter((a) => a !== '-d' && a !== '--daemon'), '-q'];
  const child = spawn(process.execPath, argv, { detached: true, stdio: 'ignore' });
  child.unref();
  process.exit(0);
}

function dropPrivileges(user: string): void {
  try {
    process.setgid?.(user);
    process.setuid?.(user);
  } catch (err) {
    die(`could not switch to user ${user}: ${(err as Error).message}`);
  }
}

process.on('uncaughtException', (err) => {
  log().fatal(`pooler error: uncaught exception: ${err.stack ?? err.message}`);
  flushLog();
  process.exit(1);
});

void main();
