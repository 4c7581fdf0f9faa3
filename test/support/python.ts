// Python with psycopg 3 for the tests that drive the pooler from psycopg, as PgBouncer's own suite
// does. A test skips (saying why) when it cannot be had.

import fs from 'node:fs';
import { runCommand } from './run-cmd.js';

/** Python with Debian's python3-psycopg on its path: the system interpreter when there is one. */
function systemPython(): string {
  return fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

export async function psycopgPython(): Promise<{ python: string } | { skip: string }> {
  const python = systemPython();
  const probe = () => runCommand(python, ['-c', 'import psycopg'], { timeoutMs: 20_000 }).catch(() => null);
  let r = await probe();
  if (r?.code === 0) return { python };
  const install = await runCommand('apt-get', ['install', '-y', '-q', 'python3-psycopg'], {
    timeoutMs: 90_000, env: { DEBIAN_FRONTEND: 'noninteractive' },
  }).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message, signal: null, timedOut: false }));
  r = await probe();
  if (r?.code === 0) return { python };
  return { skip: `psycopg 3 is not importable by ${python} and apt-get install -y python3-psycopg failed (exit ${install.code}): ${install.stderr.trim().split('\n').slice(-2).join(' ')}` };
}

