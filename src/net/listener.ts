// Listening sockets: TCP on each listen_addr with listen_backlog, and the unix socket
// unix_socket_dir/.s.PGSQL.<port> with unix_socket_mode and unix_socket_group.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '../config/types.js';

export type OnConnection = (socket: net.Socket, isUnix: boolean) => void;

export interface Listeners {
  readonly servers: net.Server[];
  readonly unixPath: string | null;
  /** Stop accepting (shutdown); open connections are not touched. */
  close(): Promise<void>;
  /** Stop accepting on TCP only: a draining pooler keeps its unix socket for the console. */
  closeTcp(): void;
}

function listenOne(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

export async function openListeners(cfg: Config, onConnection: OnConnection): Promise<Listeners> {
  const servers: net.Server[] = [];
  let unixServer: net.Server | null = null;
  let unixPath: string | null = null;
  try {
    for (const addr of cfg.listenAddr) {
      const server = net.createServer({ noDelay: true }, (s) => onConnection(s, false));
      const host = addr === '*' ? undefined : addr;
      await listenOne(server, { host, port: cfg.listenPort, backlog: cfg.listenBacklog });
      servers.push(server);
    }
    if (cfg.unixSocketDir !== '') {
      unixPath = path.join(cfg.unixSocketDir, `.s.PGSQL.${cfg.listenPort}`);
      await removeStaleSocket(unixPath);
      const server = net.createServer((s) => onConnection(s, true));
      await listenOne(server, { path: unixPath, backlog: cfg.listenBacklog });
      fs.chmodSync(unixPath, cfg.unixSocketMode);
      if (cfg.unixSocketGroup !== null) execFileSync('chgrp', [cfg.unixSocketGroup, unixPath]);
      servers.push(server);
      unixServer = server;
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  const up = unixPath;
  return {
    servers,
    unixPath,
    close: async () => {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      if (up !== null) fs.rmSync(up, { force: true });
    },
    closeTcp: () => {
      for (const s of servers) if (s !== unixServer && s.listening) s.close();
    },
  };
}

/** A socket file left by a crashed pooler would make listen() fail; one that answers is in use
 * by another process and must not be taken. */
function removeStaleSocket(p: string): Promise<void> {
  if (!fs.existsSync(p)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = net.connect({ path: p });
    probe.once('connect', () => {
      probe.destroy();
      reject(new Error(`unix socket ${p} is in use by another process`));
    });
    probe.once('error', () => {
      fs.rmSync(p, { force: true });
      resolve();
    });
  });
}
