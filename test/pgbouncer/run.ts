// `npm run test:pgbouncer [-- pytest args]`: PgBouncer's own test suite against pgpool-ts.
//
// Lays the suite out (suite-source.ts: Debian's source package of PgBouncer 1.24.1, cached outside
// the repository), copies it into a work dir with a shim where the suite expects its `pgbouncer`
// binary, runs pytest there (as user postgres when started as root: the suite runs initdb), and
// reads junit.xml. Tests that fail and are not listed in known-failures.tsv are run once more, to
// tell a flaky test from a regression.
//
// A whole run (no arguments) writes docs/compatibility.md and fails when fewer tests passed than
// min-passed.txt records (the ratchet: raise it when a fix makes more pass). With arguments
// (`test/test_auth.py -k scram`, any pytest arguments) only the summary is printed.
//
// Env: JOBS (pytest-xdist workers, default 4; 0 = one process), PG_BIN (PostgreSQL server
// binaries, default /usr/lib/postgresql/15/bin), PGB_SUITE_CACHE (where the suite is kept),
// SUITE_TIMEOUT (seconds for the whole pytest run, default 1500), KEEP_WORK (1: keep the work dir
// whole; 0: delete it; default: keep each test's ini and logs, drop the PostgreSQL data dirs),
// USE_SUDO (1: passed on to the suite, which then runs its fault-injection tests: they drop
// PostgreSQL's packets with `sudo iptables` and set up `sudo tc` netem delays on lo, so the suite's
// user, postgres when run as root, needs sudo to root, and the kernel iptables and the prio and
// netem qdiscs; off in CI, which should not change a machine's firewall).
//
// Debian 12's Python 3.11 needs `--assert=plain --tb=native`: pytest's rewriting of assertions
// hits an AST recursion bug there ("SystemError: AST constructor recursion depth mismatch") that
// aborts the whole run with INTERNALERROR.
import { spawn } from 'node:child_process';
import dns from 'node:dns';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand } from '../support/run-cmd.js';
import {
  compatibilityReport,
  countOutcomes,
  knownFailure,
  readJunit,
  readKnownFailures,
  readMinPassed,
  type TestResult,
} from './results.js';
import { SOURCE_PACKAGE, SOURCE_VERSION, suiteDir } from './suite-source.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const here = path.join(root, 'test', 'pgbouncer');
const KNOWN = path.join(here, 'known-failures.tsv');
const MIN_PASSED = path.join(here, 'min-passed.txt');
const REPORT = path.join(root, 'docs', 'compatibility.md');

const JOBS = Number(process.env.JOBS ?? 4);
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
const SUITE_TIMEOUT_S = Number(process.env.SUITE_TIMEOUT ?? 1500);
const RUN_AS = 'postgres';
const isRoot = process.getuid?.() === 0;
/** Failures outside known-failures.tsv that are run a second time; more means something broke. */
const MAX_RERUN = 40;
const PYTHON_MODULES = ['pytest', 'pytest_asyncio', 'xdist', 'pytest_timeout', 'filelock', 'psycopg'];

async function main(): Promise<number> {
  const pytestArgs = process.argv.slice(2);
  const whole = pytestArgs.length === 0;
  await checkPrerequisites();
  const known = readKnownFailures(KNOWN);
  const suite = await suiteDir(root);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbouncer-suite-'));
  fs.cpSync(suite, path.join(work, 'suite'), { recursive: true });
  writeShim(path.join(work, 'suite', 'pgbouncer'), snapshotPooler(work));
  if (isRoot) await chownTree(work);
  console.error(`pgbouncer suite: ${SOURCE_PACKAGE} ${SOURCE_VERSION} in ${work}, ${JOBS} workers`);

  const started = Date.now();
  const targets = whole ? [path.join(work, 'suite', 'test')] : pytestArgs.map((a) => (/^(\.\/)?test(\/|$)/.test(a) ? path.join(work, 'suite', a.replace(/^\.\//, '')) : a));
  let results = await runPytest(work, 'junit.xml', targets, JOBS);

  // Failures nobody expects: once more, alone, to tell flaky from broken.
  const unexpected = [...results.values()].filter((r) => (r.outcome === 'failed' || r.outcome === 'error') && knownFailure(known, r.id) === null);
  const flaky: string[] = [];
  if (unexpected.length > 0 && unexpected.length <= MAX_RERUN) {
    console.error(`pgbouncer suite: running ${unexpected.length} unexpected failure(s) again`);
    const again = await runPytest(work, 'junit-rerun.xml', unexpected.map((r) => path.join(work, 'suite', r.id)), Math.min(JOBS, unexpected.length));
    results = new Map(results);
    for (const r of again.values()) {
      if (r.outcome !== 'passed') continue;
      flaky.push(r.id);
      results.set(r.id, r);
    }
  }
  const wallSeconds = Math.round((Date.now() - started) / 1000);
  cleanWork(work);

  const counts = countOutcomes(results.values());
  printSummary(results, known, flaky);
  console.log(`\npgbouncer suite: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped of ${counts.total} (${wallSeconds} s)`);
  if (!whole) return 0;

  const commit = await gitDescribe();
  fs.writeFileSync(REPORT, compatibilityReport(results, known, {
    date: new Date().toISOString().slice(0, 10),
    commit,
    jobs: JOBS,
    wallSeconds,
    source: `Debian source package ${SOURCE_PACKAGE} ${SOURCE_VERSION}`,
    flaky,
  }));
  console.log(`pgbouncer suite: wrote ${path.relative(root, REPORT)}`);
  const min = readMinPassed(MIN_PASSED);
  if (counts.passed < min) {
    console.log(`pgbouncer suite: FAILED: ${counts.passed} passed, fewer than the ${min} that ${path.relative(root, MIN_PASSED)} records`);
    return 1;
  }
  if (counts.passed > min) console.log(`pgbouncer suite: ${counts.passed} passed, more than ${min}: raise ${path.relative(root, MIN_PASSED)} to ${counts.passed}`);
  return 0;
}

async function checkPrerequisites(): Promise<void> {
  const missing: string[] = [];
  const py = await runCommand('/usr/bin/python3', ['-c', `import ${PYTHON_MODULES.join(', ')}`]).catch(() => null);
  if (py === null || py.code !== 0) {
    missing.push('Python modules for the suite: apt-get install -y python3-pytest python3-pytest-asyncio python3-pytest-xdist python3-pytest-timeout python3-filelock python3-psycopg');
  }
  if (!fs.existsSync(path.join(PG_BIN, 'initdb'))) missing.push(`PostgreSQL server binaries in ${PG_BIN} (PG_BIN): apt-get install -y postgresql-15`);
  if (!fs.existsSync(path.join(root, 'dist', 'src', 'main.js'))) missing.push('a build: npm run build');
  if (isRoot && !(await runCommand('id', ['-u', RUN_AS])).stdout.trim()) missing.push(`a ${RUN_AS} user to run the suite as (initdb refuses root)`);
  if (missing.length > 0) throw new Error(`cannot run PgBouncer's suite; missing:\n  ${missing.join('\n  ')}`);
}

/**
 * A copy of the built pooler for this run, so that a rebuild while the suite runs (minutes) does
 * not change the pooler under it: bin/, dist/src/, the native addon, and node_modules linked.
 * Returns its bin/pgpool-ts.js.
 */
function snapshotPooler(work: string): string {
  const dir = path.join(work, 'pgpool-ts');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(root, 'bin'), path.join(dir, 'bin'), { recursive: true });
  fs.cpSync(path.join(root, 'dist', 'src'), path.join(dir, 'dist', 'src'), { recursive: true });
  const addon = path.join('native', 'peercred', 'build', 'Release', 'peercred.node');
  if (fs.existsSync(path.join(root, addon))) fs.cpSync(path.join(root, addon), path.join(dir, addon));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  return path.join(dir, 'bin', 'pgpool-ts.js');
}

/**
 * The suite's `pgbouncer`: it starts it as `pgbouncer [--quiet] [-d] [-R] test.ini`, and signals
 * the process it started, so the shim execs (the pooler keeps its pid). pgpool-ts takes
 * PgBouncer's command line as it is. When it runs a config, the pooler's own stdout and stderr (a
 * crash, a startup error) go next to the test's ini, as pooler.out; its log is the ini's logfile.
 * --version and --help answer on stdout, where the suite reads them.
 */
function writeShim(file: string, pooler: string): void {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  fs.writeFileSync(
    file,
    `#!/bin/sh
# pgpool-ts in place of PgBouncer for PgBouncer's test suite (written by test/pgbouncer/run.ts).
for arg; do ini=$arg; done
if [ -f "\${ini:-}" ]; then exec >>"$(dirname -- "$ini")/pooler.out" 2>&1; fi
exec ${quote(process.execPath)} ${quote(pooler)} "$@"
`,
    { mode: 0o755 },
  );
}

async function chownTree(dir: string): Promise<void> {
  const r = await runCommand('chown', ['-R', `${RUN_AS}:`, dir]);
  if (r.code !== 0) throw new Error(`chown -R ${RUN_AS} ${dir}: ${r.stderr}`);
}

/** One pytest run in the work dir; its junit.xml read back. */
async function runPytest(work: string, junitName: string, targets: string[], jobs: number): Promise<Map<string, TestResult>> {
  const junit = path.join(work, junitName);
  const ipv6 = (await dns.promises.lookup('localhost', { all: true }).catch(() => [])).some((a) => a.address === '::1');
  const env = [
    `PATH=${PG_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
    `HOME=${work}`,
    'LANG=C.UTF-8',
    'PYTHONDONTWRITEBYTECODE=1',
    'PYTHONIOENCODING=utf8',
    ...(process.env.USE_SUDO === '1' ? ['USE_SUDO=1'] : []),
    ...(ipv6 ? ['HAVE_IPV6_LOCALHOST=1'] : []),
  ];
  const pytest = [
    '/usr/bin/python3', '-m', 'pytest', ...targets,
    '-p', 'no:cacheprovider', `--basetemp=${path.join(work, 'tmp')}`, `--junitxml=${junit}`,
    '--assert=plain', '--tb=native', '-q', '-rfE',
    ...(jobs > 0 ? ['-n', String(jobs)] : []),
  ];
  const cmd = [...(isRoot ? ['runuser', '-u', RUN_AS, '--'] : []), 'env', '-i', ...env, ...pytest];
  console.error(`pgbouncer suite: ${pytest.join(' ')}`);
  await new Promise<void>((resolve) => {
    // Its own process group, so that a run over time can be stopped whole.
    const child = spawn(cmd[0]!, cmd.slice(1), { cwd: path.join(work, 'suite'), stdio: ['ignore', 'inherit', 'inherit'], detached: true });
    const timer = setTimeout(() => {
      console.error(`pgbouncer suite: pytest still running after ${SUITE_TIMEOUT_S} s: stopping it`);
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    }, SUITE_TIMEOUT_S * 1000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  await stopLeftovers(work);
  if (!fs.existsSync(junit)) throw new Error(`pytest wrote no ${junit}: see its output above`);
  return readJunit(fs.readFileSync(junit, 'utf8'));
}

/** Poolers and PostgreSQL servers the run left behind: every process whose command line names
 * this run's work dir (nothing else on the machine does). */
async function stopLeftovers(work: string): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid).filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${work}/`);
      } catch {
        return false;
      }
    });
    if (pids.length === 0) return;
    for (const p of pids) {
      try {
        process.kill(Number(p), signal);
      } catch {
        // Gone already.
      }
    }
    await new Promise((r) => setTimeout(r, 2_000));
  }
}

/** Keep each test's ini and logs (tmp/<worker>/<test>/bouncer/), drop the PostgreSQL data dirs. */
function cleanWork(work: string): void {
  const keep = process.env.KEEP_WORK;
  if (keep === '0') return fs.rmSync(work, { recursive: true, force: true });
  if (keep === '1') return console.error(`pgbouncer suite: work dir kept: ${work}`);
  const drop = (dir: string, depth: number): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (e.name === 'pgdata' || e.name === 'TestCA1' || e.name === 'TestCA2') fs.rmSync(p, { recursive: true, force: true });
      else if (depth > 0) drop(p, depth - 1);
    }
  };
  drop(work, 4);
  console.error(`pgbouncer suite: each test's ini and logs are under ${path.join(work, 'tmp')}`);
}

function printSummary(results: ReadonlyMap<string, TestResult>, known: ReturnType<typeof readKnownFailures>, flaky: readonly string[]): void {
  const all = [...results.values()].sort((a, b) => a.id.localeCompare(b.id));
  const untriaged = all.filter((r) => (r.outcome === 'failed' || r.outcome === 'error') && knownFailure(known, r.id) === null);
  const fixed = all.filter((r) => r.outcome === 'passed' && knownFailure(known, r.id) !== null);
  if (flaky.length > 0) console.log(`\nfailed, then passed when run again (flaky):\n${flaky.map((t) => `  ${t}`).join('\n')}`);
  if (untriaged.length > 0) {
    console.log(`\nfailed and not in test/pgbouncer/known-failures.tsv (a regression, or a failure to triage):`);
    for (const r of untriaged) console.log(`  ${r.id}: ${r.outcome}: ${r.message}`);
  }
  if (fixed.length > 0) {
    console.log(`\npassed, but listed in test/pgbouncer/known-failures.tsv (remove them there):`);
    for (const r of fixed) console.log(`  ${r.id}`);
  }
}

async function gitDescribe(): Promise<string> {
  const r = await runCommand('git', ['-C', root, 'describe', '--always', '--dirty']).catch(() => null);
  return r?.code === 0 ? r.stdout.trim() : 'unknown commit';
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`pgbouncer suite: ${err.message}`);
    process.exit(2);
  },
);
