// The outcome of a run of PgBouncer's suite: junit.xml read into one outcome per test, matched
// against the list of tests known not to pass (known-failures.tsv: why, and which issue owns
// each), and written up as docs/compatibility.md.
import fs from 'node:fs';

export type Outcome = 'passed' | 'skipped' | 'error' | 'failed';

export interface TestResult {
  /** `test/test_auth.py::test_auth_user`, parameters included. */
  readonly id: string;
  readonly outcome: Outcome;
  readonly seconds: number;
  /** The first line of pytest's failure, error or skip message. */
  readonly message: string;
}

/** Worse outcomes win when pytest reports a test twice (a failure, then an error in teardown). */
const RANK: Readonly<Record<Outcome, number>> = { passed: 0, skipped: 1, error: 2, failed: 3 };

const ENTITIES: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (m, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
    return ENTITIES[e] ?? m;
  });
}

function attributes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/([\w:-]+)="([^"]*)"/g)) out.set(m[1]!, unescapeXml(m[2]!));
  return out;
}

/** pytest's junit.xml: one result per test id. */
export function readJunit(xml: string): Map<string, TestResult> {
  const out = new Map<string, TestResult>();
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const a = attributes(m[1]!);
    // classname is `test.test_auth` (the module under the suite's test/ directory).
    const mod = (a.get('classname') ?? '?').split('.').pop()!;
    const id = `test/${mod}.py::${a.get('name') ?? '?'}`;
    let outcome: Outcome = 'passed';
    let message = '';
    for (const c of (m[2] ?? '').matchAll(/<(failure|error|skipped)\b([^>]*?)\/?>/g)) {
      const o: Outcome = c[1] === 'failure' ? 'failed' : (c[1] as Outcome);
      if (RANK[o] > RANK[outcome]) {
        outcome = o;
        message = (attributes(c[2]!).get('message') ?? '').split('\n')[0]!.slice(0, 200);
      }
    }
    const seconds = Number(a.get('time') ?? 0);
    const old = out.get(id);
    if (old === undefined || RANK[outcome] > RANK[old.outcome]) out.set(id, { id, outcome, seconds: seconds + (old?.seconds ?? 0), message });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Tests known not to pass

export interface KnownFailure {
  /** A test id; `*` matches any run of characters. */
  readonly pattern: string;
  readonly owner: string;
  readonly reason: string;
  readonly match: (id: string) => boolean;
}

export interface KnownFailures {
  /** owner → what it is (`#12` → `Every PgBouncer setting acts: missing features`). */
  readonly owners: ReadonlyMap<string, string>;
  readonly entries: readonly KnownFailure[];
}

/**
 * known-failures.tsv: `owner <TAB> #12 <TAB> description` lines name the owners, and every other
 * line is `test <TAB> owner <TAB> reason`; `#` starts a comment line. A problem names the line.
 */
export function readKnownFailures(file: string): KnownFailures {
  const owners = new Map<string, string>();
  const entries: KnownFailure[] = [];
  fs.readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    if (line.trim() === '' || line.startsWith('#')) return;
    const cols = line.split('\t');
    if (cols.length !== 3 || cols.some((c) => c.trim() === '')) throw new Error(`${file}:${i + 1}: expected three tab-separated columns: ${line}`);
    const [first, owner, text] = cols as [string, string, string];
    if (first === 'owner') {
      owners.set(owner, text);
      return;
    }
    const re = new RegExp(`^${first.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    entries.push({ pattern: first, owner, reason: text, match: (id) => re.test(id) });
  });
  for (const e of entries) if (!owners.has(e.owner)) throw new Error(`${file}: owner ${e.owner} of ${e.pattern} is not declared (an "owner" line)`);
  return { owners, entries };
}

export function knownFailure(known: KnownFailures, id: string): KnownFailure | null {
  return known.entries.find((e) => e.match(id)) ?? null;
}

/** The least number of passed tests a whole run must reach (min-passed.txt: its one number). */
export function readMinPassed(file: string): number {
  const line = fs.readFileSync(file, 'utf8').split('\n').find((l) => /^\s*\d+\s*$/.test(l));
  if (line === undefined) throw new Error(`${file}: no count in it`);
  return Number(line.trim());
}

// ------------------------------------------------------------------------------------------------
// The report

export interface RunInfo {
  readonly date: string;
  readonly commit: string;
  readonly jobs: number;
  readonly wallSeconds: number;
  readonly source: string;
  /** Tests that failed, then passed when run again. */
  readonly flaky: readonly string[];
}

export interface Counts {
  readonly total: number;
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
}

export function countOutcomes(results: Iterable<TestResult>): Counts {
  let total = 0;
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const r of results) {
    total++;
    if (r.outcome === 'passed') passed++;
    else if (r.outcome === 'skipped') skipped++;
    else failed++;
  }
  return { total, passed, failed, skipped };
}

const ENVIRONMENT = 'environment';

/** docs/compatibility.md. */
export function compatibilityReport(results: ReadonlyMap<string, TestResult>, known: KnownFailures, run: RunInfo): string {
  const all = [...results.values()].sort((a, b) => a.id.localeCompare(b.id));
  const total = countOutcomes(all);
  const files = new Map<string, TestResult[]>();
  for (const r of all) {
    const f = r.id.split('::')[0]!;
    files.set(f, [...(files.get(f) ?? []), r]);
  }
  const rows = [...files].map(([f, rs]) => {
    const c = countOutcomes(rs);
    return `| ${f.replace(/^test\//, '')} | ${c.total} | ${c.passed} | ${c.failed} | ${c.skipped} |`;
  });

  // Every test that did not pass, under its owner.
  const byOwner = new Map<string, string[]>();
  const add = (owner: string, line: string) => byOwner.set(owner, [...(byOwner.get(owner) ?? []), line]);
  for (const r of all) {
    if (r.outcome === 'passed') continue;
    if (r.outcome === 'skipped') {
      // The fault-injection tests need root through sudo for iptables and tc: run.ts passes USE_SUDO on.
      const how = /USE_SUDO/.test(r.message) ? ' (runs with `USE_SUDO=1 npm run test:pgbouncer`: test/pgbouncer/run.ts)' : '';
      add(ENVIRONMENT, `- \`${r.id}\`: skipped: ${r.message || 'no reason given'}${how}`);
      continue;
    }
    const k = knownFailure(known, r.id);
    if (k === null) add('?', `- \`${r.id}\` (${r.outcome}): ${r.message || 'no message'}`);
    else add(k.owner, `- \`${r.id}\` (${r.outcome}): ${k.reason}`);
  }
  const owners = [...byOwner.keys()].sort((a, b) => ownerOrder(a) - ownerOrder(b) || a.localeCompare(b));
  const sections = owners.map((o) => {
    const title = o === '?' ? 'Not triaged yet (not in test/pgbouncer/known-failures.tsv)' : o === ENVIRONMENT ? 'Skipped by the environment' : `${o}: ${known.owners.get(o) ?? ''}`;
    const list = byOwner.get(o)!;
    return `### ${title} (${list.length})\n\n${list.join('\n')}\n`;
  });

  return `# Compatibility with PgBouncer's own test suite

<!-- Written by \`npm run test:pgbouncer\` (test/pgbouncer/run.ts) after a whole run: do not edit.
     Reasons and owners come from test/pgbouncer/known-failures.tsv; edit that file instead. -->

pgpool-ts is run against PgBouncer 1.24.1's own pytest suite (${run.source}),
which starts a \`pgbouncer\` binary per test from a generated \`pgbouncer.ini\`, talks to it with
psycopg and psql, and reads its \`logfile\`. A shim in place of that binary starts \`bin/pgpool-ts.js\` with the same
command line. Real PgBouncer 1.24.1 passes 229 of these 236 tests on the same machine (7 are skipped
by the environment: no IPv6 localhost, no sudo, no LDAP).

**${total.passed} of ${total.total} passed**, ${total.failed} failed, ${total.skipped} skipped
(${run.date}, pgpool-ts ${run.commit}, ${run.jobs} pytest workers, ${run.wallSeconds} s).
${run.flaky.length === 0 ? '' : `\nPassed only when run a second time (flaky): ${run.flaky.map((t) => `\`${t}\``).join(', ')}.\n`}
| file | tests | passed | failed | skipped |
|---|---:|---:|---:|---:|
${rows.join('\n')}
| **total** | ${total.total} | ${total.passed} | ${total.failed} | ${total.skipped} |

## Every test that does not pass, and why

${sections.join('\n')}`;
}

/** Untriaged first, then issues by number, then the rest (not planned, environment). */
function ownerOrder(owner: string): number {
  if (owner === '?') return 0;
  const n = /^#(\d+)$/.exec(owner);
  if (n !== null) return Number(n[1]);
  return owner === ENVIRONMENT ? 1e9 + 1 : 1e9;
}
