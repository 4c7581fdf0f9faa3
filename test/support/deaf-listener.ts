// A TCP port where connects hang, without a firewall: a listener with a backlog of 0 whose accept
// queue is filled and never drained, so the kernel drops every later SYN and a connect waits for
// its retransmits, as behind a firewall that drops packets. The listener is a Python process:
// Node accepts every connection it is offered. Loopback only.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';

const SCRIPT = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;

/** How long a connect may take before the queue counts as full. */
const HANG_MS = 300;
/** The accept queue holds backlog + 1 connections; a few more tries cover kernel differences. */
const MAX_FILLERS = 8;

export interface DeafListener {
  readonly port: number;
  close(): Promise<void>;
}

/** Listen on `port` (where a server was: it must be free) or a free one, and fill the queue. */
export async function startDeafListener(port = 0): Promise<DeafListener> {
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const proc = spawn(python, ['-c', SCRIPT, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const first = await new Promise<string | null>((resolve) => {
    const lines = readline.createInterface({ input: proc.stdout });
    lines.once('line', (line) => resolve(line));
    proc.once('exit', () => resolve(null));
  });
  const bound = Number(first);
  if (first === null || !Number.isInteger(bound) || bound <= 0) throw new Error(`deaf listener: ${python} did not listen on port ${port}`);
  const fillers: net.Socket[] = [];
  const close = async (): Promise<void> => {
    for (const s of fillers) s.destroy();
    proc.stdin.end();
    await exited;
  };
  for (;;) {
    const s = net.connect({ host: '127.0.0.1', port: bound });
    s.on('error', () => undefined);
    fillers.push(s);
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), HANG_MS);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!connected) return { port: bound, close };
    if (fillers.length >= MAX_FILLERS) {
      await close();
      throw new Error(`deaf listener: ${MAX_FILLERS} connects to port ${bound} all completed; the accept queue never filled`);
    }
  }
}
