// A tiny TCP proxy to put between the pooler and PostgreSQL, which misbehaves on request (PgCat's
// toxiproxy role). Point a [databases] entry at it: every server connection the pooler opens then
// goes through a real socket pair that can be delayed, stalled, cut after N bytes or reset.
//
// The behaviour is chosen per connection when it is accepted (set() changes it for later ones);
// stall() and resetAll() act on the connections open now. Loopback only, a free port.

import net from 'node:net';

export interface FaultOptions {
  /** Accept, then never connect upstream nor answer: a server that hangs before its login. */
  blackhole?: boolean;
  /** Hold every chunk this long before passing it on, in both directions. */
  delayMs?: number;
  /** Add to each connection's delay a random share of this (fixed per connection, so its bytes
   * keep their order): connections opened together then land at scattered times. */
  jitterMs?: number;
  /** Server→client bytes after which the connection is cut on both sides (null = never). */
  cutAfterBytes?: number | null;
  /** How a cut ends the client side: FIN after the last byte, or RST. */
  cutWith?: 'close' | 'reset';
}

export interface FaultProxy {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  /** Connections cut by cutAfterBytes so far. */
  readonly cuts: number;
  /** The behaviour of connections accepted from now on (open ones keep theirs). */
  set(opts: FaultOptions): void;
  /** Stop passing bytes on every open connection (they wait in the kernel's buffers). */
  stall(): void;
  unstall(): void;
  /** RST every open connection now. */
  resetAll(): void;
  /** Stop listening (the port is free again); open connections go on. */
  stopListening(): Promise<void>;
  /** Stop listening and destroy every connection. */
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket | null;
  timers: Set<NodeJS.Timeout>;
  /** Being cut: the upstream is gone, the client side still flushes its last bytes. */
  cutting: boolean;
}

const DEFAULTS: Required<FaultOptions> = { blackhole: false, delayMs: 0, jitterMs: 0, cutAfterBytes: null, cutWith: 'close' };

/** `port`: listen there (a server that comes back where it was), else on a free one. */
export async function startFaultProxy(target: { host: string; port: number }, initial: FaultOptions = {}, port = 0): Promise<FaultProxy> {
  let opts: Required<FaultOptions> = { ...DEFAULTS, ...initial };
  const pairs = new Set<Pair>();
  let accepted = 0;
  let cuts = 0;
  let stalled = false;

  const destroyPair = (pair: Pair, reset = false): void => {
    for (const t of pair.timers) clearTimeout(t);
    pair.timers.clear();
    if (reset && !pair.client.destroyed) pair.client.resetAndDestroy();
    else pair.client.destroy();
    if (pair.upstream !== null) {
      if (reset && !pair.upstream.destroyed) pair.upstream.resetAndDestroy();
      else pair.upstream.destroy();
    }
    pairs.delete(pair);
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    accepted++;
    const mine = opts;
    const pair: Pair = { client, upstream: null, timers: new Set(), cutting: false };
    pairs.add(pair);
    client.on('error', () => destroyPair(pair));
    client.on('close', () => destroyPair(pair));
    if (stalled) client.pause();
    if (mine.blackhole) {
      client.on('end', () => destroyPair(pair));
      // Read and drop whatever the pooler sends (its StartupMessage); never answer.
      client.on('data', () => undefined);
      return;
    }
    const upstream = net.connect({ host: target.host, port: target.port });
    pair.upstream = upstream;
    if (stalled) upstream.pause();
    upstream.on('error', () => { if (!pair.cutting) destroyPair(pair); });
    upstream.on('close', () => { if (!pair.cutting) destroyPair(pair); });

    const delayMs = mine.delayMs + Math.random() * mine.jitterMs;
    /** Pass a chunk on now or after the delay; timers of equal length fire in order. */
    const later = (fn: () => void): void => {
      if (delayMs <= 0) return fn();
      const t = setTimeout(() => {
        pair.timers.delete(t);
        fn();
      }, delayMs);
      pair.timers.add(t);
    };

    // A client that ends its side after its last bytes (a cancel request) has them delivered
    // first; its side stays open until the server closes, as with a real server.
    client.on('end', () => later(() => upstream.end()));

    // Client bytes queue in Node until the upstream connects; net.Socket buffers writes made
    // before 'connect'.
    client.on('data', (chunk: Buffer) => later(() => {
      if (!upstream.destroyed && !upstream.write(chunk)) {
        client.pause();
        upstream.once('drain', () => { if (!stalled) client.resume(); });
      }
    }));

    let down = 0;
    upstream.on('data', (chunk: Buffer) => later(() => {
      if (client.destroyed) return;
      const cut = mine.cutAfterBytes;
      if (cut !== null && down + chunk.length >= cut) {
        const last = chunk.subarray(0, Math.max(0, cut - down));
        down = cut;
        cuts++;
        pair.cutting = true;
        for (const t of pair.timers) clearTimeout(t);
        pair.timers.clear();
        upstream.destroy();
        if (mine.cutWith === 'reset') {
          // Whatever is still unsent is lost with the RST, as on a real broken link.
          client.write(last, () => destroyPair(pair, true));
        } else {
          client.end(last);
        }
        return;
      }
      down += chunk.length;
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => { if (!stalled) upstream.resume(); });
      }
    }));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr !== 'object') throw new Error(`fault proxy: listen(${port}) returned no port`);

  return {
    host: '127.0.0.1',
    port: addr.port,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    get cuts() {
      return cuts;
    },
    set(next) {
      opts = { ...opts, ...next };
    },
    stall() {
      stalled = true;
      for (const p of pairs) {
        p.client.pause();
        p.upstream?.pause();
      }
    },
    unstall() {
      stalled = false;
      for (const p of pairs) {
        p.client.resume();
        p.upstream?.resume();
      }
    },
    resetAll() {
      for (const p of [...pairs]) destroyPair(p, true);
    },
    stopListening() {
      // The listening socket closes at once; close's callback would wait for every connection.
      server.close();
      return new Promise((resolve) => setImmediate(resolve));
    },
    close() {
      for (const p of [...pairs]) destroyPair(p);
      if (!server.listening) return Promise.resolve();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
