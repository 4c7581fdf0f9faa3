// Named prepared statements in transaction and statement mode (PgBouncer's max_prepared_statements).
//
// A client's named statement lives on whichever server it is linked to at the moment, so the
// pooler renames every named statement to a pooler-wide name derived from its text and parameter
// types (`PGPOOL_<n>`), prepares it on a server the first time a client there needs it, and keeps
// an LRU of what each server holds, closing the least recently used one past the limit.
//
// The client must see exactly the replies it would see from its own session, in order:
// - a Parse of a statement the server already has becomes a Parse of the unnamed statement with
//   the same text: the server's ParseComplete then lands exactly where the client expects one;
// - a Close of a named statement becomes a Close of a name that never exists, which PostgreSQL
//   answers with CloseComplete at the right place;
// - a Parse the pooler adds (before a Bind or Describe on a server that lacks the statement) and a
//   Close it adds (LRU eviction) have replies the client never asked for: the server connection
//   swallows them, guided by a FIFO of what each Parse/Close sent is owed (`ReplyQueue`).
// Only Parse, Bind, Describe and Close bodies are decoded; unnamed statements pass untouched.
import { Frontend } from '../protocol/codes.js';

/** What the server connection does with the reply to each Parse/Close it was sent. */
export const Reply = {
  PassParse: 1,
  SwallowParse: 2,
  PassClose: 3,
  SwallowClose: 4,
  /** A Sync: an error skips every reply up to here. */
  Sync: 5,
} as const;
export type Reply = (typeof Reply)[keyof typeof Reply];

/** FIFO with a moving head: no shift() cost on the hot path. */
export class ReplyQueue {
  private items: Reply[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(r: Reply): void {
    this.items.push(r);
  }

  peek(): Reply | undefined {
    return this.items[this.head];
  }

  shift(): Reply | undefined {
    const r = this.items[this.head++];
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return r;
  }

  /** After an ErrorResponse PostgreSQL skips to the next Sync: so do the replies owed. */
  dropUntilSync(): void {
    while (this.length > 0 && this.peek() !== Reply.Sync) this.shift();
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

/** One distinct statement (text + parameter types), shared by every client that prepares it. */
export interface Statement {
  readonly serverName: string;
  /** The Parse body after the name: query text, NUL, parameter count and type oids. */
  readonly definition: Buffer;
}

/** Pooler-wide: the same text and types get the same server-side name on every server. */
const statements = new Map<string, Statement>();
let nextStatement = 1;

function statementFor(definition: Buffer): Statement {
  const key = definition.toString('latin1');
  let st = statements.get(key);
  if (st === undefined) {
    st = { serverName: `PGPOOL_${nextStatement++}`, definition: Buffer.from(definition) };
    statements.set(key, st);
  }
  return st;
}

/** What the pooler needs of the linked server to place statements on it. */
export interface PreparedServer {
  /** Server-side statement names, least recently used first. */
  readonly prepared: Map<string, true>;
  readonly replies: ReplyQueue;
}

function message(type: number, ...parts: (Buffer | string)[]): Buffer {
  const bufs = parts.map((p) => (typeof p === 'string' ? Buffer.from(p + '\0') : p));
  const len = bufs.reduce((n, b) => n + b.length, 4);
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = type;
  out.writeInt32BE(len, 1);
  let pos = 5;
  for (const b of bufs) pos += b.copy(out, pos);
  return out;
}

/** A name's end (its NUL) in a body, or -1. */
function cstrEnd(body: Buffer, from: number): number {
  return body.indexOf(0, from);
}

/** Close of a name no statement ever has: PostgreSQL answers CloseComplete and does nothing. */
const CLOSE_NOTHING = message(Frontend.Close, Buffer.from('S'), 'PGPOOL_NONE');

/** One client's named statements: its own names to the pooler-wide statements. */
export class ClientStatements {
  private readonly named = new Map<string, Statement>();

  constructor(private readonly max: number) {}

  get size(): number {
    return this.named.size;
  }

  /**
   * The bytes to send the server for one client message of type P, B, D or C (given its body),
   * or null to send it unchanged. `out` receives the replacement messages in order.
   */
  rewrite(type: number, body: Buffer, server: PreparedServer, out: Buffer[]): boolean {
    switch (type) {
      case Frontend.Parse: {
        const z = cstrEnd(body, 0);
        if (z <= 0) {
          server.replies.push(Reply.PassParse);
          return false;
        }
        const st = statementFor(body.subarray(z + 1));
        this.named.set(body.toString('utf8', 0, z), st);
        if (server.prepared.has(st.serverName)) {
          touch(server, st.serverName);
          // Same text as the unnamed statement: the ParseComplete lands where the client expects.
          out.push(message(Frontend.Parse, '', st.definition));
        } else {
          this.place(st, server, out, Reply.PassParse);
          return true;
        }
        server.replies.push(Reply.PassParse);
        return true;
      }
      case Frontend.Bind: {
        const p = cstrEnd(body, 0);
        const z = p < 0 ? -1 : cstrEnd(body, p + 1);
        if (z < 0 || z === p + 1) return false;
        const st = this.named.get(body.toString('utf8', p + 1, z));
        if (st === undefined) return false; // PostgreSQL answers "does not exist" itself.
        this.ensure(st, server, out);
        out.push(message(Frontend.Bind, body.subarray(0, p + 1), st.serverName, body.subarray(z + 1)));
        return true;
      }
      case Frontend.Describe:
      case Frontend.Close: {
        if (body[0] !== 0x53 /* S */) {
          if (type === Frontend.Close) server.replies.push(Reply.PassClose);
          return false;
        }
        const z = cstrEnd(body, 1);
        if (z <= 1) {
          if (type === Frontend.Close) server.replies.push(Reply.PassClose);
          return false;
        }
        const name = body.toString('utf8', 1, z);
        const st = this.named.get(name);
        if (type === Frontend.Close) {
          // The server-side statement stays for other clients; the client gets its CloseComplete.
          this.named.delete(name);
          out.push(CLOSE_NOTHING);
          server.replies.push(Reply.PassClose);
          return true;
        }
        if (st === undefined) return false;
        this.ensure(st, server, out);
        out.push(message(Frontend.Describe, Buffer.from('S'), st.serverName));
        return true;
      }
      default:
        return false;
    }
  }

  /** Make sure the linked server has the statement, adding a Parse whose reply is swallowed. */
  private ensure(st: Statement, server: PreparedServer, out: Buffer[]): void {
    if (server.prepared.has(st.serverName)) touch(server, st.serverName);
    else this.place(st, server, out, Reply.SwallowParse);
  }

  private place(st: Statement, server: PreparedServer, out: Buffer[], reply: Reply): void {
    // Past the limit, close the least recently used statement for real (its reply swallowed), so
    // a server does not grow without bound.
    if (this.max > 0 && server.prepared.size >= this.max) {
      const victim = server.prepared.keys().next().value;
      if (victim !== undefined) {
        server.prepared.delete(victim);
        out.push(message(Frontend.Close, Buffer.from('S'), victim));
        server.replies.push(Reply.SwallowClose);
      }
    }
    out.push(message(Frontend.Parse, st.serverName, st.definition));
    server.prepared.set(st.serverName, true);
    server.replies.push(reply);
  }

  /**
   * SQL DEALLOCATE of one of the client's statements: forget it and return the server-side name
   * to deallocate on the linked server (other clients there prepare it again if they need it).
   */
  forget(name: string): string | null {
    const st = this.named.get(name);
    if (st === undefined) return null;
    this.named.delete(name);
    return st.serverName;
  }

  /** DEALLOCATE ALL / DISCARD ALL from the client: forget its statements. */
  clear(): void {
    this.named.clear();
  }
}

function touch(server: PreparedServer, name: string): void {
  server.prepared.delete(name);
  server.prepared.set(name, true);
}
