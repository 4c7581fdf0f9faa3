// Cancel requests forwarded to another pooler process: PgBouncer's peer pools. A CancelRequest
// whose key names another peer (or, in a multi-worker instance, another worker) is sent there on a
// connection of its own, plain, with nothing else on it, as PostgreSQL's protocol has it. At most
// pool_size forwards per peer are open at once; the others wait in arrival order (the queue is
// capped at max_client_conn: there cannot be more queries to cancel than clients). The janitor
// bounds a forward with server_connect_timeout while it connects; cancel_wait_timeout is its
// request's (app.ts), which drops it if it was not sent yet. The request is closed when the forward
// ends, so the client learns its cancel arrived when the peer has acted on it, as with PostgreSQL.
import net from 'node:net';
import { now } from '../clock.js';
import type { Config } from '../config/types.js';
import { log } from '../log.js';
import { addressText, socketAddress, type SocketAddress } from '../net/address.js';
import type { CancelRequest } from './types.js';

interface Forward {
  /** The whole CancelRequest packet. */
  readonly packet: Buffer;
  /** The connection that asked for it, closed when the forward ends. */
  readonly request: CancelRequest;
  socket: net.Socket | null;
  /** When its connection was opened (server_connect_timeout). */
  connectStart: number;
  /** The packet went out: the peer closing the connection means it acted on it. */
  sent: boolean;
  /** Why it was given up, if it was. */
  abandoned: string | null;
}

export class PeerPool {
  /** Forwards waiting for a free slot, oldest first (cl_waiting_cancel_req with `login`). */
  private readonly waiting: Forward[] = [];
  /** Connecting to the peer (sv_login; their requests still count as waiting). */
  readonly login = new Set<Forward>();
  /** Sent, until the peer closes the connection (sv_active_cancel, cl_active_cancel_req). */
  readonly active = new Set<Forward>();

  constructor(
    /** The [peers] id, or for a sibling worker its worker index. */
    readonly id: number,
    public address: SocketAddress,
    /** Forwards at once; replaced on reload. */
    public size: number,
    private readonly cfg: () => Config,
  ) {}

  /** Requests not yet sent: queued, or waiting for their connection. */
  get waitingCount(): number {
    return this.waiting.length + this.login.size;
  }

  /** Forward the CancelRequest `packet` for `request`; dropped (and logged) when the queue is full. */
  forward(packet: Buffer, request: CancelRequest): void {
    if (this.waiting.length >= this.cfg().maxClientConn) {
      log().warn({ peer: this.id }, `dropping cancel request for peer ${this.id}: ${this.waiting.length} are already waiting`);
      return request.done('too many cancel requests waiting');
    }
    const f: Forward = { packet, request, socket: null, connectStart: 0, sent: false, abandoned: null };
    request.abort = () => this.drop(f);
    this.waiting.push(f);
    this.pump();
  }

  /** The request gave up (cancel_wait_timeout) or went before its packet was sent: it is not sent. */
  private drop(f: Forward): void {
    f.request.abort = null;
    const i = this.waiting.indexOf(f);
    if (i >= 0) this.waiting.splice(i, 1);
    f.socket?.destroy();
  }

  private pump(): void {
    while (this.waiting.length > 0 && this.login.size + this.active.size < Math.max(1, this.size)) {
      this.open(this.waiting.shift()!);
    }
  }

  private open(f: Forward): void {
    const a = this.address;
    const socket = 'unix' in a ? net.connect({ path: a.unix }) : net.connect({ host: a.host, port: a.port });
    f.socket = socket;
    f.connectStart = now;
    this.login.add(f);
    socket.once('connect', () => {
      this.login.delete(f);
      this.active.add(f);
      f.sent = true;
      // Sent: the peer may act on it whatever the request does now.
      f.request.abort = null;
      // The peer answers nothing and closes once it has acted (PostgreSQL's cancel protocol).
      socket.end(f.packet);
    });
    socket.on('data', () => undefined);
    socket.once('error', (err) => {
      log().warn({ peer: this.id, addr: addressText(a), err: err.message }, `could not forward cancel request to peer ${this.id} at ${addressText(a)}: ${err.message}`);
    });
    socket.once('close', () => this.done(f));
  }

  private done(f: Forward): void {
    this.login.delete(f);
    this.active.delete(f);
    f.socket = null;
    f.request.abort = null;
    f.request.done(f.abandoned ?? (f.sent ? 'successfully sent cancel request' : 'failed to send cancel request'));
    this.pump();
  }

  /** One janitor pass: connect timeouts. */
  sweep(): void {
    const cfg = this.cfg();
    if (cfg.serverConnectTimeout <= 0) return;
    for (const f of this.login) {
      if (now - f.connectStart >= cfg.serverConnectTimeout * 1000) this.abandon(f, 'connect timeout');
    }
  }

  private abandon(f: Forward, reason: string): void {
    log().warn({ peer: this.id, addr: addressText(this.address) }, `cancel request for peer ${this.id} abandoned: ${reason}`);
    f.abandoned = reason;
    f.socket?.destroy();
  }

  /** Drop everything (the peer left [peers], or shutdown). */
  close(): void {
    for (const f of this.waiting.splice(0)) {
      f.request.abort = null;
      f.request.done('peer pool closed');
    }
    for (const f of [...this.login, ...this.active]) f.socket?.destroy();
  }
}

/** The peer pools of [peers], created on a peer's first forward, as PgBouncer does. */
export class Peers {
  readonly pools = new Map<number, PeerPool>();

  constructor(private readonly cfg: () => Config) {}

  /** Forward to [peers] entry `id` for `request`; false when there is none. */
  forward(id: number, packet: Buffer, request: CancelRequest): boolean {
    const def = this.cfg().peers.get(id);
    if (def === undefined) return false;
    let pool = this.pools.get(id);
    if (pool === undefined) {
      pool = new PeerPool(id, socketAddress(def.host, def.port), def.poolSize ?? this.cfg().defaultPoolSize, this.cfg);
      this.pools.set(id, pool);
    }
    log().debug({ peer: id }, `forwarding cancellation request to peer ${id}`);
    pool.forward(packet, request);
    return true;
  }

  /** After a reload: pools follow their entry; those of removed peers go. */
  reload(): void {
    const cfg = this.cfg();
    for (const [id, pool] of this.pools) {
      const def = cfg.peers.get(id);
      if (def === undefined) {
        log().warn(`dropping peer ${id} as it does not exist anymore`);
        pool.close();
        this.pools.delete(id);
        continue;
      }
      pool.address = socketAddress(def.host, def.port);
      pool.size = def.poolSize ?? cfg.defaultPoolSize;
    }
  }

  sweep(): void {
    for (const pool of this.pools.values()) pool.sweep();
  }

  close(): void {
    for (const pool of this.pools.values()) pool.close();
  }
}
