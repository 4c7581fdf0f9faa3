#!/usr/bin/env node
// `npm test` entry (after `tsc -p .`): runs the compiled tests with node's built-in runner.
//
// One node:test run over every file, one file at a time, so CI reads a single summary. Integration
// and regression files each start their own PostgreSQL and pooler processes: on a 2-core machine,
// parallel clusters turn timing-sensitive tests (timeouts, backpressure) into flaky ones, and the
// unit files take seconds either way.
//
// Test files are listed here rather than by passing directories to `node --test`: Node 20 treats
// every .js under a directory named `test` as a test file, which would include dist/test/support.
//
//   node test/run.js                 all suites
//   node test/run.js <file.js>...    just those files, one at a time
//
// Env: PGPOOL_TEST_TIMEOUT_MS (per test, default 120000), PGPOOL_TEST_PG_BIN, PGPOOL_TEST_KEEP.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'test');
const timeoutMs = process.env.PGPOOL_TEST_TIMEOUT_MS ?? '120000';

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

function runPhase(name, files, concurrency) {
  if (files.length === 0) return Promise.resolve(0);
  console.error(`run.js: ${name}: ${files.length} file(s), concurrency ${concurrency}`);
  const args = ['--test', `--test-concurrency=${concurrency}`, `--test-timeout=${timeoutMs}`, ...files];
  return new Promise((resolve) => {
    child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env: process.env });
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
const phases = explicit.length > 0
  ? [['selected', explicit, 1]]
  : [['all', ['unit', 'integration', 'regress'].flatMap((d) => testFiles(path.join(dist, d))), 1]];

if (phases.every(([, files]) => files.length === 0)) {
  console.error(`run.js: no *.test.js under ${dist}; did \`tsc -p .\` run?`);
  process.exit(1);
}

const [[name, files, concurrency]] = phases;
process.exit(await runPhase(name, files, concurrency));
