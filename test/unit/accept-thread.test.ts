// The native addon's accept thread (acceptStart / acceptStop, native/peercred/peercred.c), which
// src/net/listener.ts uses for TCP ports: it takes connections off the kernel's queue while the
// event loop is busy, caps what waits for the loop at maxQueue, gives back what still waits when
// stopped, and survives running out of descriptors.
//
// "While the event loop is busy" is made real: this process blocks its own loop in a busy wait
// while a child process connects. A connection the kernel could not queue has its SYN dropped and
// retried a second later, so what the child sees connected within its half-second window is what
// was accepted (or queued in the kernel) during the block. With a backlog of 4 the kernel alone
// queues five; Node's own server, for contrast, gets no further than that.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { describe, it } from 'node:test';
import { ADDON_PATH, nativeFunction, type NativeAddon } from '../../src/net/native.js';

const start = nativeFunction('acceptStart', 'test');
const stop = nativeFunction('acceptStop', 'test');
const bind = nativeFunction('tcpBind', 'test');
const tune = nativeFunction('listenTune', 'test');
const skip = 'error' in start ? start.error : false;

function fns(): { start: NativeAddon['acceptStart']; stop: NativeAddon['acceptStop']; bind: NativeAddon['tcpBind']; tune: NativeAddon['listenTune'] } {
  if ('error' in start || 'error' in stop || 'error' in bind || 'error' in tune) throw new Error('no accept thread');
  return { start: start.fn, stop: stop.fn, bind: bind.fn, tune: tune.fn };
}

/** A free port on 127.0.0.1 (bound by the kernel, then released). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** The child: on SIGUSR2 it opens `n` connections to `port`, one a millisecond (a burst from one
 * loop outruns the thread's wake-up on a loaded machine: the kernel's queue is what absorbs
 * that), and prints, after `windowMs`, how many connected and how many of those the other end
 * closed; it keeps them open until killed. */
const CONNECTOR = `
const net = require('node:net');
const [port, n, windowMs] = process.argv.slice(1).map(Number);
process.on('SIGUSR2', () => {
  let connected = 0, closed = 0, i = 0;
  const next = () => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => connected++);
    s.on('error', () => {});
    s.on('close', () => { if (s.bytesRead === 0 && !s.connecting) closed++; });
    if (++i < n) setTimeout(next, 1);
  };
  next();
  setTimeout(() => process.stdout.write(JSON.stringify({ connected, closed }) + '\\n'), windowMs);
});
process.stdout.write('ready\\n');
setInterval(() => {}, 1000);
`;

interface Counts {
  connected: number;
  closed: number;
}

/** Run the connector against `port` while this process's event loop is blocked for a second,
 * calling `duringBlock` at the end of the block (still inside it); the connector counts for
 * `windowMs` from the start of the block. */
async function connectWhileBlocked(port: number, n: number, windowMs = 500, duringBlock: () => void = () => undefined): Promise<{ counts: Counts; kill: () => void }> {
  const child = spawn(process.execPath, ['-e', CONNECTOR, String(port), String(n), String(windowMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let wake: () => void = () => undefined;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    lines.push(...d.split('\n').filter((l) => l !== ''));
    wake();
  });
  const line = async (i: number): Promise<string> => {
    while (lines.length <= i) await new Promise<void>((r) => (wake = r));
    return lines[i] ?? '';
  };
  assert.equal(await line(0), 'ready');
  process.kill(child.pid ?? 0, 'SIGUSR2');
  const until = Date.now() + 1000;
  while (Date.now() < until) {
    // the event loop is blocked: nothing of ours runs
  }
  duringBlock();
  const counts = JSON.parse(await line(1)) as Counts;
  return { counts, kill: () => child.kill('SIGKILL') };
}

describe('the accept thread', { skip }, () => {
  it('takes every connection of a burst while the event loop is blocked; Node alone queues only the backlog', async () => {
    const { start: acceptStart, stop: acceptStop, bind: tcpBind } = fns();
    const port = await freePort();
    const accepted: number[] = [];
    const { handle } = acceptStart(tcpBind('127.0.0.1', port, false), 4, 1000, (fd) => accepted.push(fd));
    const { counts, kill } = await connectWhileBlocked(port, 64);
    try {
      assert.equal(counts.connected, 64, 'every connection completed while the loop was blocked');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(accepted.length, 64);
      assert.ok(accepted.every((fd) => fd >= 0));
      const sockets = accepted.map((fd) => new net.Socket({ fd }));
      assert.ok(sockets.every((s) => s.remotePort !== undefined && s.remoteAddress === '127.0.0.1'));
      for (const s of sockets) s.destroy();
    } finally {
      kill();
      acceptStop(handle);
    }
    await assert.rejects(
      () => new Promise((resolve, reject) => net.connect(port, '127.0.0.1').once('connect', resolve).once('error', reject)),
      /ECONNREFUSED/,
      'stopped: the port is closed',
    );

    const port2 = await freePort();
    const server = net.createServer((s) => s.destroy()).listen({ port: port2, host: '127.0.0.1', backlog: 4 });
    await new Promise((r) => server.once('listening', r));
    const node = await connectWhileBlocked(port2, 64);
    node.kill();
    server.close();
    assert.ok(node.counts.connected < 16, `Node's server: ${node.counts.connected} of 64 connected in the window`);
  });

  it('holds at most maxQueue connections for the loop; the kernel queue takes the rest, as without it', async () => {
    const { start: acceptStart, stop: acceptStop, bind: tcpBind } = fns();
    const port = await freePort();
    const { handle } = acceptStart(tcpBind('127.0.0.1', port, false), 4, 4, (fd) => fs.closeSync(fd));
    const { counts, kill } = await connectWhileBlocked(port, 64);
    kill();
    acceptStop(handle);
    // 4 queued, 1 held by the thread waiting for room, and the kernel's backlog of 4 (+1).
    assert.ok(counts.connected >= 4 && counts.connected < 16, `${counts.connected} of 64 connected`);
  });

  it('returns the connections accepted but not yet handed on when stopped, still open', async () => {
    const { start: acceptStart, stop: acceptStop, bind: tcpBind } = fns();
    const port = await freePort();
    let handed = 0;
    let left: number[] = [];
    const { handle } = acceptStart(tcpBind('127.0.0.1', port, false), 4, 1000, () => handed++);
    const { counts, kill } = await connectWhileBlocked(port, 16, 1500, () => (left = acceptStop(handle)));
    kill();
    assert.equal(counts.connected, 16);
    assert.equal(counts.closed, 0, 'none was closed');
    assert.equal(handed, 0);
    assert.equal(left.length, 16);
    for (const fd of left) fs.closeSync(fd);
    assert.throws(() => acceptStop(handle), /a running handle/, 'a second stop is refused');
  });

  it('stopped under a stream of connections (pgbench -C in a rolling restart), it takes them instead of resetting them', async () => {
    // Closing a listening socket resets what the kernel still holds for it: the accept queue, and
    // (TCP_DEFER_ACCEPT, on as the pooler sets it) connections waiting for their first byte.
    // Four loops in a child connect, send a byte (two at once, two a millisecond later) and wait
    // for the answer, again and again, while the thread is started and stopped six times on
    // their port. Closing at once reset 11 to 16 connections a run here. The thread's last look
    // (accept_settle) resets none on a machine with a core to spare; with two busy loops
    // competing for the two cores it reset 0 to 6, where the kernel's own handshake work waits
    // for a core too. Hence the small allowance.
    const { start: acceptStart, stop: acceptStop, bind: tcpBind, tune: listenTune } = fns();
    const port = await freePort();
    const script = `
      const net = require('node:net');
      const counts = { answered: 0, reset: 0, refused: 0 };
      let running = true;
      const one = (i) => {
        if (!running) return;
        const s = net.connect(${port}, '127.0.0.1');
        let connected = false, answered = false;
        s.on('connect', () => { connected = true; setTimeout(() => s.write('x'), i % 2); });
        s.on('data', () => { answered = true; s.destroy(); });
        s.on('error', () => {});
        s.on('close', () => {
          if (answered) counts.answered++; else if (connected) counts.reset++; else counts.refused++;
          setTimeout(one, connected ? 0 : 1, i);
        });
      };
      for (let i = 0; i < 4; i++) one(i);
      process.on('SIGUSR2', () => { running = false; setTimeout(() => process.stdout.write(JSON.stringify(counts) + '\\n'), 300); });
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const serve = (fd: number): void => {
      const s = new net.Socket({ fd });
      s.on('error', () => undefined);
      s.once('data', () => s.end('y'));
    };
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    try {
      for (let cycle = 0; cycle < 6; cycle++) {
        const fd = tcpBind('127.0.0.1', port, false);
        const { handle } = acceptStart(fd, 128, 1000, serve);
        listenTune(fd, true, 0);
        await sleep(150);
        for (const left of acceptStop(handle)) serve(left);
        await sleep(20);
      }
      process.kill(child.pid ?? 0, 'SIGUSR2');
      while (!out.includes('\n')) await sleep(50);
      const counts = JSON.parse(out) as { answered: number; reset: number; refused: number };
      assert.ok(counts.answered > 100, `${counts.answered} answered`);
      assert.ok(counts.reset <= 2, `${counts.reset} of ${counts.answered + counts.reset} connections reset`);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('out of descriptors: reports accept() failing as -EMFILE, and accepts again once there are some', async () => {
    // A child with a low descriptor limit accepts and keeps what it gets; the parent connects
    // until the child reports EMFILE, closes its side, and the child closes what it holds.
    const port = await freePort();
    const script = `
      const fs = require('node:fs');
      const addon = require(${JSON.stringify(ADDON_PATH)});
      const held = [];
      addon.acceptStart(addon.tcpBind('127.0.0.1', ${port}, false), 128, 1000, (fd) => {
        if (fd < 0) { process.stdout.write('failed ' + fd + '\\n'); for (const h of held.splice(0)) fs.closeSync(h); return; }
        held.push(fd);
        process.stdout.write('accepted\\n');
      });
      process.stdout.write('ready\\n');
    `;
    const child = spawn('prlimit', ['--nofile=40', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let wake: () => void = () => undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      wake();
    });
    const accepted = (): number => (out.match(/accepted/g) ?? []).length;
    const waitFor = async (what: string, done: () => boolean): Promise<void> => {
      const until = Date.now() + 20_000;
      while (!done()) {
        assert.ok(Date.now() < until, `no ${what} in: ${out}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    const clients: net.Socket[] = [];
    try {
      await waitFor('ready', () => out.includes('ready'));
      const connect = (): void => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        clients.push(s);
      };
      for (let i = 0; i < 60 && !out.includes('failed'); i++) {
        connect();
        await new Promise((r) => setTimeout(r, 20));
      }
      await waitFor('EMFILE', () => out.includes('failed -24\n'));
      const before = accepted();
      // The child freed its descriptors on the failure; the thread retries within a second and
      // takes the connection the kernel kept queued meanwhile, and the next.
      connect();
      connect();
      await waitFor('accept after EMFILE', () => accepted() >= before + 2);
    } finally {
      for (const s of clients) s.destroy();
      child.kill('SIGKILL');
    }
  });
});
