// Debian's haproxy in TCP mode in front of poolers, as a PostgREST or CloudNativePG deployment puts
// it: round robin, a PostgreSQL health check (`option pgsql-check`: a StartupMessage, healthy when
// the answer is AuthenticationOk) every 200 ms, a server out after one failed check. Run in the
// foreground as a child process on a free loopback port; stop() ends it by its PID.

import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { canConnect, freePort } from './pooler.js';
import { waitFor } from './wait.js';

export interface Haproxy {
  readonly port: number;
  /** Lines haproxy printed (its own log goes to stderr with -db). */
  output(): string;
  stop(): Promise<void>;
}

/** haproxy over `backends` (127.0.0.1 ports); `checkUser` logs in for the health check. */
export async function startHaproxy(backends: readonly number[], checkUser: string): Promise<Haproxy> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-haproxy-'));
  const port = await freePort();
  const cfg = path.join(dir, 'haproxy.cfg');
  await fsp.writeFile(cfg, [
    'global',
    '  maxconn 2000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 120s',
    '  timeout server 120s',
    '  retries 2',
    '  option redispatch',
    'frontend pg',
    `  bind 127.0.0.1:${port}`,
    '  default_backend poolers',
    'backend poolers',
    '  balance roundrobin',
    `  option pgsql-check user ${checkUser}`,
    '  default-server inter 200ms fall 1 rise 1',
    ...backends.map((p, i) => `  server p${i + 1} 127.0.0.1:${p} check`),
    '',
  ].join('\n'));
  const child = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitFor(`haproxy on ${port}`, () => canConnect('127.0.0.1', port)).catch((e: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${e.message}\n${out}`);
  });
  return {
    port,
    output: () => out,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
