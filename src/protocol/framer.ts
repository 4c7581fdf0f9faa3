// Incremental, header-only framer for one direction of one connection.
//
// The hot path must not parse: the framer reads 5-byte headers and skips bodies, and only for the
// message types a caller asked for ("wanted") does it hand over the body. A wanted body that lies
// inside one chunk is a subarray of it (no copy); one split across chunks is gathered once. A body
// that is skipped is never copied, whatever its size, so a 200 MB CopyData streams through.
//
// Some types matter only as events (the client's Query and Sync count the ReadyForQuery a server
// owes): for "header-only" types the sink is called as soon as the header is read, with an empty
// body, and the body streams past like any other.
//
// The first packet of a connection has no type byte (StartupMessage, SSLRequest, CancelRequest,
// GSSENCRequest): in `startup` mode the framer reads a 4-byte length and reports type 0.

/** What a sink gets: the message type (0 for an untyped startup packet), its body, and the offset
 * in the current chunk just past the message (for a header-only type: just past its header).
 * Returning false stops the scan there. */
export type FrameSink = (type: number, body: Buffer, end: number) => boolean;

/** The same without a Buffer per message: the body is `buf[start, end)` (`buf` is the chunk, or
 * the body gathered from several chunks), `next` the offset in the chunk just past the message.
 * A chunk may be a read buffer Node reads into again: a sink copies what it keeps. */
export type ScanSink = (type: number, buf: Buffer, start: number, end: number, next: number) => boolean;

export const FRAMER_STOPPED = -1;

export class Framer {
  /** The next message is untyped (a 4-byte length only). Cleared after that message. */
  startup: boolean;
  /** Set when a length was invalid; the connection must be closed with 08P01. */
  error: string | null = null;

  /** WANT_BODY in a slot = deliver the body of that type; WANT_HEADER = report its header; 0 = skip. */
  private readonly wanted: Uint8Array;
  /** Larger after login than for the startup packet. */
  maxPacket: number;

  // Header gathering (a header may be split across chunks).
  private readonly header = Buffer.alloc(5);
  private headerHave = 0;
  // The message in progress: its type, how many body bytes are still to come.
  private type = 0;
  private remain = 0;
  private inBody = false;
  // Gathering a wanted body that spans chunks.
  private parts: Buffer[] | null = null;
  private bodyLen = 0;

  constructor(wanted: Iterable<number>, maxPacket: number, startup: boolean, headerOnly: Iterable<number> = []) {
    this.wanted = new Uint8Array(256);
    this.maxPacket = maxPacket;
    this.startup = startup;
    this.want(wanted, headerOnly);
  }

  /** Change what is delivered (login decodes everything, the hot path almost nothing). */
  want(types: Iterable<number>, headerOnly: Iterable<number> = []): void {
    this.wanted.fill(0);
    for (const t of headerOnly) this.wanted[t] = WANT_HEADER;
    for (const t of types) this.wanted[t] = WANT_BODY;
  }

  /** Forget any partial message (a connection attempt started over). */
  reset(): void {
    this.headerHave = 0;
    this.inBody = false;
    this.remain = 0;
    this.parts = null;
  }

  /** Where the message in progress began in the chunk being fed; -1 when in an earlier chunk. */
  msgStart = -1;

  /** A message is half-read and its body is wanted: its bytes must not be forwarded yet. */
  get pendingWanted(): boolean {
    if (this.inBody) return this.wanted[this.type] === WANT_BODY;
    return this.headerHave > 0 && !this.startup && this.wanted[this.header[0]!] === WANT_BODY;
  }

  /** True when no message is half-read: a safe point to hand the connection over. */
  get atBoundary(): boolean {
    return this.headerHave === 0 && !this.inBody;
  }

  /** The sink of the feed() in progress (see feedSinkAdapter). */
  private feedSink: FrameSink | null = null;

  /**
   * Scan `chunk` from `start`. Calls `sink` for each completed wanted message with its body as a
   * Buffer. Returns the offset at which scanning stopped (chunk.length when all was consumed), or
   * FRAMER_STOPPED with `error` set when a length is invalid.
   */
  feed(chunk: Buffer, start: number, sink: FrameSink): number {
    // A sink may feed this framer again (a login that ends replays what the client pipelined).
    const outer = this.feedSink;
    this.feedSink = sink;
    try {
      return this.scan(chunk, start, this.feedSinkAdapter);
    } finally {
      this.feedSink = outer;
    }
  }

  private readonly feedSinkAdapter: ScanSink = (type, buf, start, end, next) =>
    this.feedSink!(type, start === end ? EMPTY : start === 0 && end === buf.length ? buf : buf.subarray(start, end), next);

  /** feed() without allocating: see ScanSink. Only `chunk[start, end)` is read. */
  scan(chunk: Buffer, start: number, sink: ScanSink, end = chunk.length): number {
    let pos = start;
    const len = end;
    if (!this.atBoundary) this.msgStart = -1;
    while (pos < len) {
      if (!this.inBody) {
        if (this.headerHave === 0) this.msgStart = pos;
        const headerSize = this.startup ? 4 : 5;
        // Fast path: the whole header is in this chunk.
        let msgLen: number;
        if (this.headerHave === 0 && pos + headerSize <= len) {
          if (this.startup) {
            this.type = 0;
            msgLen = int32At(chunk, pos);
          } else {
            this.type = chunk[pos]!;
            msgLen = int32At(chunk, pos + 1);
          }
          pos += headerSize;
        } else {
          const take = Math.min(headerSize - this.headerHave, len - pos);
          chunk.copy(this.header, this.headerHave, pos, pos + take);
          this.headerHave += take;
          pos += take;
          if (this.headerHave < headerSize) return pos;
          this.headerHave = 0;
          if (this.startup) {
            this.type = 0;
            msgLen = int32At(this.header, 0);
          } else {
            this.type = this.header[0]!;
            msgLen = int32At(this.header, 1);
          }
        }
        // The length counts itself: 4 is the smallest legal value (8 for startup packets, which
        // carry at least a protocol code).
        const min = this.startup ? 8 : 4;
        if (msgLen < min || msgLen > this.maxPacket) {
          this.error =
            msgLen > this.maxPacket
              ? `message length ${msgLen} exceeds max_packet_size ${this.maxPacket}`
              : `invalid message length ${msgLen}`;
          return FRAMER_STOPPED;
        }
        this.startup = false;
        this.remain = msgLen - 4;
        this.inBody = this.remain > 0;
        this.bodyLen = this.remain;
        this.parts = null;
        const want = this.wanted[this.type];
        if (want === WANT_HEADER || (want === WANT_BODY && this.remain === 0)) {
          if (!sink(this.type, chunk, pos, pos, pos)) return pos;
        }
        if (!this.inBody) continue;
      }
      const avail = len - pos;
      const wanted = this.wanted[this.type] === WANT_BODY;
      if (avail >= this.remain) {
        const end = pos + this.remain;
        this.inBody = false;
        this.remain = 0;
        if (wanted) {
          const bodyStart = pos;
          pos = end;
          if (this.parts === null) {
            if (!sink(this.type, chunk, bodyStart, end, end)) return pos;
          } else {
            this.parts.push(chunk.subarray(bodyStart, end));
            const body = Buffer.concat(this.parts, this.bodyLen);
            this.parts = null;
            if (!sink(this.type, body, 0, body.length, end)) return pos;
          }
        } else {
          pos = end;
        }
      } else {
        // The body continues in a later chunk: a wanted one is gathered, copied (the chunk may be
        // a read buffer that the next read overwrites).
        if (wanted) (this.parts ??= []).push(Buffer.from(chunk.subarray(pos, len)));
        this.remain -= avail;
        pos = len;
      }
    }
    return pos;
  }
}

/**
 * The big-endian int32 at `buf[i, i + 4)` (the caller has checked the bounds). Not
 * `buf.readInt32BE`: optimized code loads Buffer methods through V8's generic LoadIC (a call per
 * message, seen in the relay's machine code), and the method validates its offset again.
 */
export function int32At(buf: Buffer, i: number): number {
  return (buf[i]! << 24) | (buf[i + 1]! << 16) | (buf[i + 2]! << 8) | buf[i + 3]!;
}

const EMPTY = Buffer.alloc(0);
const WANT_BODY = 1;
const WANT_HEADER = 2;
