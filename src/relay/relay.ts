// The hot path: bytes between a logged-in client and its server, both ways, reading only headers.
//
// One ClientRelay per client in `ready` and one ServerRelay per logged-in server; each is the
// reader of its socket's Io (net/io.ts: stream handles and a static read buffer, or net.Socket's
// stream API). A read is framed in place (protocol/framer.ts `scan`: no Buffer per message) and
// written on in one write:
// - Client → server: Query, Sync and FunctionCall count the ReadyForQuery the server owes
//   (`server.owed`); Parse/Bind/Describe/Execute/Close/Flush mark a pipeline open until its Sync
//   (`inExtendedQuery`); Terminate ends the session. With named prepared statements tracked
//   (client/prepared.ts), a Parse/Bind/Describe/Close that names one is rewritten. The bytes are
//   copied into the server's out buffer (a client reads into the buffer all clients share, which
//   a write must not hold on to) and flushed once per read.
// - Server → client: ReadyForQuery (its status byte is the pooling decision), ParameterStatus (the
//   variable cache) and ErrorResponse are decoded; replies to the pooler's own queries and the
//   ParseComplete/CloseComplete of Parses and Closes it added are cut out; the rest goes to the
//   client straight from the server's read buffer. A scan stops at a ReadyForQuery that leaves
//   nothing owed: the bytes up to it go to the client, and the pool may hand the server to someone
//   else (`onServerReady`) before the next byte.
// - Backpressure: a write that returns false pauses the source until the destination's Io says it
//   is writable again; what a client sends while it has no server is held (one buffer per client,
//   reused) until a server is linked, and past 64 kB the client is paused.
// Counters are plain fields (pool stats, server.owed); nothing here allocates per message.
import { now, refresh } from '../clock.js';
import { Errors } from '../errors.js';
import { copyInto, type IoOwner } from '../net/io.js';
import { Backend, Frontend, TxStatus } from '../protocol/codes.js';
import * as encode from '../protocol/encode.js';
import { decodeErrorFields } from '../protocol/error-response.js';
import { FRAMER_STOPPED, int32At } from '../protocol/framer.js';
import { Reply, deallocation, invalidate } from '../client/prepared.js';
import type { ClientConn } from '../client/client-conn.js';
import type { ServerConn } from '../server/server-conn.js';

/** A held request (no server yet) keeps its buffer for the next one up to this size. */
const HELD_KEEP = 16 * 1024;
/** A client without a server is read from until it has sent this much: most send one request
 * and wait for its answer, and stopping and restarting the socket would be two system calls per
 * transaction. Past it, the client is paused until linked. */
const HELD_MAX = 64 * 1024;

export class ClientRelay implements IoOwner {
  /** The read being forwarded (`chunk[0, chunkEnd)`), and where its bytes not yet queued for
   * the server begin. */
  private chunk: Buffer | null = null;
  private chunkEnd = 0;
  private segStart = 0;
  /** Offset of a Terminate in the read being forwarded, or -1. */
  private terminateAt = -1;
  /** The pooler answered a request itself (DEALLOCATE): the server may be released after it. */
  private answeredLocally = false;
  /** Bytes read while no server was linked. */
  private held: Buffer | null = null;
  private heldLen = 0;
  /** Messages prepared.ts puts in place of one it rewrote (emptied after each use). */
  private readonly rewritten: Buffer[] = [];

  constructor(private readonly c: ClientConn) {}

  readonly onData = (chunk: Buffer): void => {
    refresh();
    const c = this.c;
    c.lastActivity = now;
    if (c.phase !== 'ready') return;
    if (c.server === null && this.heldLen === 0) {
      if (c.framer.atBoundary && chunk[0] === Frontend.Terminate) return c.close('client close request', true);
      if (!this.requestServer()) return;
    }
    const server = c.server;
    if (server !== null && this.heldLen === 0) return this.forward(chunk, server);
    this.hold(chunk);
    if (this.heldLen > HELD_MAX) c.io!.pause();
  };

  /** The client's socket drained: its server may read again. */
  readonly onWritable = (): void => {
    this.c.server?.io?.resume();
  };

  /** A request usually finds an idle server at once: linked by this call, the read goes straight
   * to it instead of through `held`. Otherwise the client now waits (and what it sends is held
   * until it is linked). False when the client was refused. */
  private requestServer(): boolean {
    const c = this.c;
    if (c.pool !== null && !c.pool.clWaiting.has(c)) c.pool.requestServer(c);
    return c.phase !== 'closed';
  }

  private hold(chunk: Buffer): void {
    const need = this.heldLen + chunk.length;
    if (this.held === null || this.held.length < need) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.heldLen, 256));
      if (this.held !== null) this.held.copy(grown, 0, 0, this.heldLen);
      this.held = grown;
    }
    copyInto(this.held, this.heldLen, chunk, 0, chunk.length);
    this.heldLen = need;
  }

  /** A server was linked (and given the client's SETs): send it what the client sent meanwhile. */
  linked(server: ServerConn): void {
    this.c.io!.resume();
    const n = this.heldLen;
    if (n === 0) return;
    const held = this.held!;
    this.heldLen = 0;
    this.forward(held, server, n);
    if (held.length > HELD_KEEP) this.held = null;
  }

  /** Frame one read (`chunk[0, length)`) and queue it for the server, with rewritten statements
   * in place. */
  private forward(chunk: Buffer, server: ServerConn, length = chunk.length): void {
    const c = this.c;
    const framer = c.framer;
    this.terminateAt = -1;
    this.segStart = 0;
    this.chunk = chunk;
    this.chunkEnd = length;
    const io = server.io!;
    const mark = io.queuedLength;
    const stop = framer.scan(chunk, 0, this.onMessage, length);
    this.chunk = null;
    if (stop === FRAMER_STOPPED) return c.fail(Errors.protocolViolation(framer.error ?? 'bad packet'));
    if (c.phase === 'closed') {
      // A message refused the client (a prepared statement it does not hold, a Query under
      // disable_pqexec): nothing of this read goes on.
      io.truncate(mark);
      return;
    }
    let end = this.terminateAt >= 0 ? this.terminateAt : length;
    // A Parse/Bind/Describe/Close still arriving is held back until it is whole (it may be renamed).
    if (this.terminateAt < 0 && framer.pendingWanted) end = Math.max(this.segStart, framer.msgStart);
    io.append(chunk, this.segStart, end);
    if (c.pool !== null) c.pool.stats.bytesReceived += end;
    if (!io.flush()) c.io!.pause();
    if (this.terminateAt >= 0) c.close('client close request', true);
    else if (this.answeredLocally) {
      this.answeredLocally = false;
      if (server.owed === 0) c.pool?.onServerReady(server);
    }
  }

  private readonly onMessage = (type: number, buf: Buffer, start: number, end: number, next: number): boolean => {
    const c = this.c;
    const server = c.server!;
    // A query, as PgBouncer counts one (query_count): whatever the client sends while nothing is
    // in flight, up to the ReadyForQuery that answers it: a Query, or a whole Parse/Bind/Execute
    // pipeline with its Sync; requests pipelined behind it count with it.
    if (server.owed === 0 && !c.inExtendedQuery && type !== Frontend.Terminate && c.pool !== null) c.pool.stats.queries++;
    switch (type) {
      case Frontend.Query:
        if (c.pool!.cfg.disablePqexec) {
          c.log.error('client used "Query" packet type');
          c.fail(Errors.pqexecDisallowed());
          return false;
        }
        if (c.stmts !== null) {
          if (this.sqlDeallocate(next, server)) return true;
          // An error in a simple query must not take replies owed to a later batch with it.
          server.replies.push(Reply.Sync);
        }
        this.request(server);
        return true;
      case Frontend.FunctionCall:
        this.request(server);
        return true;
      case Frontend.Sync:
        server.owed++;
        server.requestTime = now;
        c.inExtendedQuery = false;
        if (c.stmts !== null) server.replies.push(Reply.Sync);
        return true;
      case Frontend.Terminate:
        this.terminateAt = next - 5;
        return false;
      case Frontend.Parse:
      case Frontend.Bind:
      case Frontend.Describe:
      case Frontend.Close:
        c.inExtendedQuery = true;
        return c.stmts === null || this.rewrite(type, buf, start, end, next, server);
      default:
        // Execute, Flush: a pipeline is open until its Sync.
        c.inExtendedQuery = true;
        return true;
    }
  };

  /** A Query or FunctionCall: the server owes one more ReadyForQuery. */
  private request(server: ServerConn): void {
    server.owed++;
    server.requestTime = now;
  }

  /**
   * SQL `DEALLOCATE name`, `DEALLOCATE ALL` and `DISCARD ALL` act on the client's own statements
   * (PgBouncer handles only the ALL forms, its #991). A short Query whose text lies in this read
   * is peeked at, without decoding any other query. Returns true when the pooler answered it.
   */
  private sqlDeallocate(textStart: number, server: ServerConn): boolean {
    const chunk = this.chunk!;
    // The header began in an earlier read (the hostile tests split it): its length is not here and
    // the message cannot be cut out, so this rare DEALLOCATE goes to PostgreSQL as it is.
    if (textStart < 5) return false;
    const len = int32At(chunk, textStart - 4) - 4;
    if (len > 256 || textStart + len > this.chunkEnd || (chunk[textStart]! | 0x20) !== 0x64 /* d */) return false;
    const d = deallocation(chunk.toString('utf8', textStart, textStart + len - 1));
    if (d === null) return false;
    const c = this.c;
    if ('all' in d) {
      // Forwarded as it is: PostgreSQL's own reply is the answer.
      c.stmts!.dropAll(d.discard, server);
      return false;
    }
    const serverName = c.stmts!.forget(d.name);
    if (serverName === null) return false; // PostgreSQL's own "does not exist" error is the answer.
    const before = textStart - 5;
    if (server.prepared.delete(serverName)) {
      this.cut(before, textStart + len, queryMessage(`DEALLOCATE "${serverName}"`));
      return false;
    }
    if (server.owed > 0 || c.inExtendedQuery) return false; // Pipelined: let PostgreSQL answer.
    // The statement was never placed on this server: nothing to drop there, answer it here.
    this.cut(before, textStart + len, null);
    c.send(Buffer.concat([encode.commandComplete('DEALLOCATE'), encode.readyForQuery(server.txStatus)]));
    this.answeredLocally = true;
    return true;
  }

  /** Replace the bytes [start, end) of the read being forwarded by `msg` (or nothing). */
  private cut(start: number, end: number, msg: Buffer | null): void {
    const io = this.c.server!.io!;
    if (start > this.segStart) io.append(this.chunk!, this.segStart, start);
    if (msg !== null) io.append(msg, 0, msg.length);
    this.segStart = end;
  }

  /** A Parse/Bind/Describe/Close with statements tracked: in place when it names none, else
   * replaced by the statement tracker's messages; false when the tracker refused it and the
   * client is closed. */
  private rewrite(type: number, buf: Buffer, start: number, end: number, next: number, server: ServerConn): boolean {
    const stmts = this.c.stmts!;
    // Where the message began in this read; -1 when in an earlier one (its bytes were held back
    // then, and `buf` is its body gathered).
    const msgStart = buf === this.chunk ? start - 5 : -1;
    const io = server.io!;
    if (stmts.passesUnchanged(type, buf, start, end, server)) {
      if (msgStart >= 0) return true;
      io.appendMessage(type, buf, start, end);
      this.segStart = next;
      return true;
    }
    const out = this.rewritten;
    const changed = stmts.rewrite(type, buf.subarray(start, end), server, out);
    if (typeof changed !== 'boolean') {
      out.length = 0;
      this.c.log.error(changed.logLine);
      this.c.fail(changed.error);
      return false;
    }
    if (!changed && msgStart >= 0) return true;
    if (msgStart > this.segStart) io.append(this.chunk!, this.segStart, msgStart);
    if (changed) for (const m of out) io.append(m, 0, m.length);
    else io.appendMessage(type, buf, start, end);
    out.length = 0;
    this.segStart = next;
    return true;
  }
}

export class ServerRelay implements IoOwner {
  /** The read being relayed, where forwarding resumes in it (after cut-out replies), and where
   * the linked client may be released (just past a ReadyForQuery leaving nothing owed). */
  private chunk: Buffer | null = null;
  private fwdFrom = 0;
  private releaseAt = -1;

  constructor(private readonly s: ServerConn) {}

  readonly onData = (chunk: Buffer): void => {
    refresh();
    const s = this.s;
    if (s.collector !== null) s.collect(chunk);
    else this.relay(chunk);
  };

  /** The server's socket drained: its client may send again. */
  readonly onWritable = (): void => {
    this.s.client?.resumeReading();
  };

  /** Forward server bytes to the linked client, reading only headers. */
  relay(chunk: Buffer): void {
    const s = this.s;
    const framer = s.framer;
    let pos = 0;
    this.chunk = chunk;
    while (pos < chunk.length) {
      this.fwdFrom = pos;
      this.releaseAt = -1;
      const stop = framer.scan(chunk, pos, this.onMessage);
      if (stop === FRAMER_STOPPED) {
        this.chunk = null;
        s.bad = true;
        return s.lost(`protocol error from server: ${framer.error}`);
      }
      const client = s.client;
      // While pooler queries are still unanswered, everything after fwdFrom is their reply.
      const end = this.releaseAt >= 0 ? this.releaseAt : s.internal > 0 ? this.fwdFrom : stop;
      if (client !== null && end > this.fwdFrom) this.send(this.fwdFrom, end);
      else if (client === null && end > this.fwdFrom && s.internal === 0) {
        // Bytes for nobody: an idle server should be silent. Anything but a notice means the
        // server is not in the state we think; do not reuse it.
        s.log.debug('unexpected data from idle server');
      }
      if (this.releaseAt >= 0) s.owner.onServerReady(s);
      if (s.state === 'closed') break;
      pos = stop;
    }
    this.chunk = null;
  }

  /** Bytes [start, end) of the read to the linked client. */
  private send(start: number, end: number): void {
    const s = this.s;
    const chunk = this.chunk!;
    const part = start === 0 && end === chunk.length ? chunk : chunk.subarray(start, end);
    if (!s.client!.writeFromServer(part, s.io)) s.io!.pause();
  }

  private readonly onMessage = (type: number, buf: Buffer, start: number, end: number, next: number): boolean => {
    const s = this.s;
    if (type === Backend.ParseComplete || type === Backend.CloseComplete) {
      // Only while statements are tracked: which of these replies the client asked for.
      const r = s.replies.length > 0 ? s.replies.shift() : undefined;
      if (r === Reply.SwallowParse || r === Reply.SwallowClose) this.cut(next - 5, next);
      return true;
    }
    if (type === Backend.ReadyForQuery) {
      if (s.replies.peek() === Reply.Sync) s.replies.shift();
      s.txStatus = end > start ? buf[start]! : TxStatus.Idle;
      if (s.internal > 0) {
        // The end of a pooler-sent query's reply: forward only what follows.
        this.fwdFrom = next;
        s.internalAnswered();
        return true;
      }
      if (s.owed > 0) s.owed--;
      if (s.owed === 0) {
        // Statement mode refuses a transaction: the client must not see this ReadyForQuery, or
        // its driver takes the statement as done (PgBouncer stops before it too).
        const refused = s.txStatus !== TxStatus.Idle && s.owner.mode === 'statement';
        this.releaseAt = refused ? next - 6 : next;
        return false;
      }
      return true;
    }
    if (type === Backend.ParameterStatus) {
      const kv = s.storeParameter(buf.subarray(start, end));
      if (kv !== null && s.internal === 0) s.client?.onServerParameter(kv[0], kv[1]);
      return true;
    }
    // ErrorResponse (rare: decoded once, for every use below). PostgreSQL now skips the rest of
    // the batch, so no reply is owed until Sync.
    const f = decodeErrorFields(buf.subarray(start, end));
    if (s.replies.length > 0) {
      s.replies.dropUntilSync();
      const bound = s.lastBound;
      if (bound !== null && f.C === STALE_PLAN.code && f.M === STALE_PLAN.message) {
        s.prepared.delete(bound.serverName);
        invalidate(bound);
        s.lastBound = null;
      }
    }
    if (s.internal > 0) {
      s.log.warn({ sqlstate: f.C, reason: f.M }, `pooler query failed: ${f.M ?? ''}`);
    } else if (s.client === null) {
      // A FATAL to an idle server (pg_terminate_backend, shutdown): it will close.
      s.log.info({ sqlstate: f.C }, `server error while idle: ${f.M ?? ''}`);
      s.bad = true;
    } else if (f.S === 'FATAL' || f.V === 'FATAL') {
      // Remember a FATAL so the client can be told why its server went away.
      s.bad = true;
    }
    return true;
  };

  /** Drop one whole reply the client never asked for: send what precedes it, skip it. */
  private cut(start: number, end: number): void {
    if (this.s.client !== null && start > this.fwdFrom) this.send(this.fwdFrom, start);
    this.fwdFrom = end;
  }
}

/** DDL changed the result type under a prepared statement (PgBouncer #1038). */
const STALE_PLAN = { code: '0A000', message: 'cached plan must not change result type' };

function queryMessage(sql: string): Buffer {
  const text = Buffer.from(sql + '\0');
  const out = Buffer.allocUnsafe(5 + text.length);
  out[0] = Frontend.Query;
  out.writeInt32BE(4 + text.length, 1);
  text.copy(out, 5);
  return out;
}
