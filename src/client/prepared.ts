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
//
// Where the client's names disagree with what it sends, the pooler answers as PgBouncer does,
// closing the client: a Parse of a name it already holds, a Bind or Describe of a name it never
// prepared (answering in the middle of a pipeline is not something it can do exactly). A name
// lives from the client's Parse to its Close or DEALLOCATE, even when PostgreSQL refused or
// skipped the Parse: then the server merely lacks the statement, and it is parsed again there
// when the client binds it (psycopg relies on this after a failed pipeline, as PgBouncer allows).
// Unlike PgBouncer, a name whose Parse PostgreSQL refused or skipped may be parsed again, as
// against PostgreSQL (a statement on a table created later).
import { Errors, type PoolerError } from '../errors.js';
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
type Undo = () => void;

/** FIFO with a moving head: no shift() cost on the hot path. An entry may carry an undo: the
 * bookkeeping made when its message was sent, reverted when PostgreSQL skips or refuses it. */
export class ReplyQueue {
  private readonly items: Reply[] = [];
  private readonly undos: (Undo | null)[] = [];
  private head = 0;
  private tail = 0;

  get length(): number {
    return this.tail - this.head;
  }

  push(r: Reply, undo: Undo | null = null): void {
    if (this.tail < this.items.length) {
      this.items[this.tail] = r;
      this.undos[this.tail] = undo;
    } else {
      this.items.push(r);
      this.undos.push(undo);
    }
    this.tail++;
  }

  peek(): Reply | undefined {
    return this.head < this.tail ? this.items[this.head] : undefined;
  }

  shift(): Reply | undefined {
    if (this.head === this.tail) return undefined;
    const r = this.items[this.head];
    this.undos[this.head++] = null;
    // Emptied: start over at 0 (every undo is null already; no fill, a call into V8's C++ per
    // ReadyForQuery).
    if (this.head === this.tail) this.head = this.tail = 0;
    return r;
  }

  /**
   * After an ErrorResponse PostgreSQL skips to the next Sync: so do the replies owed. A Parse
   * skipped (or the one that failed) prepared nothing; a Close skipped closed nothing.
   */
  dropUntilSync(): void {
    while (this.length > 0 && this.peek() !== Reply.Sync) {
      const undo = this.undos[this.head] ?? null;
      this.shift();
      undo?.();
    }
  }

  /** Emptied in place, keeping its arrays: it empties at every ReadyForQuery, and an array
   * truncated to nothing (or a new one) would allocate again at the next query. */
  clear(): void {
    this.undos.fill(null, this.head, this.tail);
    this.head = 0;
    this.tail = 0;
  }
}

/** One distinct statement (text + parameter types), shared by every client that prepares it. */
export interface Statement {
  /** Renamed when DDL invalidated its plans: every server then prepares it afresh. */
  serverName: string;
  /** The Parse body after the name: query text, NUL, parameter count and type oids. */
  readonly definition: Buffer;
  /** Its key in `statements`. */
  readonly key: string;
  /** Client names bound to it; at 0 it leaves `statements`. */
  refs: number;
}

/**
 * Pooler-wide: the same text and types get the same server-side name on every server, for as
 * long as some client holds a name for it. Then it is forgotten, or a pooler serving ever new
 * statement texts would keep every one of them. A server that still has it under its old name
 * keeps it only until its LRU evicts it; a client preparing the text again gets a new name.
 */
const statements = new Map<string, Statement>();
let nextStatement = 1;

function statementFor(definition: Buffer): Statement {
  const key = definition.toString('latin1');
  let st = statements.get(key);
  if (st === undefined) {
    st = { serverName: `PGPOOL_${nextStatement++}`, definition: Buffer.from(definition), key, refs: 0 };
    statements.set(key, st);
  }
  return st;
}

/** Distinct statements some client holds a name for (what the pooler keeps in memory). */
export function statementCount(): number {
  return statements.size;
}

/** What the pooler needs of the linked server to place statements on it. */
export interface PreparedServer {
  /** The server is inside a transaction block (its last ReadyForQuery said T or E). */
  readonly inTransaction: boolean;
  /** Server-side statement names, least recently used first. */
  readonly prepared: Map<string, true>;
  /** The statement of the last Bind sent, to invalidate it when its plan went stale. */
  lastBound: Statement | null;
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

/** The same within `buf[from, end)`; a loop, since names are short and Buffer#indexOf is a call
 * into C++ (this runs for every Parse/Bind/Describe/Close). */
function cstrIn(buf: Buffer, from: number, end: number): number {
  for (let i = from; i < end; i++) if (buf[i] === 0) return i;
  return -1;
}

/** Close of a name no statement ever has: PostgreSQL answers CloseComplete and does nothing. */
const CLOSE_NOTHING = message(Frontend.Close, Buffer.from('S'), 'PGPOOL_NONE');
/** A statement the pooler parses only for its ParseComplete, and closes at once. */
const SCRATCH = 'PGPOOL_SCRATCH';
const CLOSE_SCRATCH = message(Frontend.Close, Buffer.from('S'), SCRATCH);

/** `DEALLOCATE [PREPARE] name|ALL` or `DISCARD ALL`: what it drops, or null for any other SQL. */
export function deallocation(sql: string): { all: true; discard: boolean } | { name: string } | null {
  const text = sql.trim().replace(/;\s*$/, '');
  const m = /^(?:deallocate(?:\s+prepare)?\s+(?:(all)|"([^"]+)"|([a-z_][a-z0-9_$]*))|discard\s+(all))$/i.exec(text);
  if (m === null) return null;
  if (m[1] !== undefined || m[4] !== undefined) return { all: true, discard: m[4] !== undefined };
  return { name: m[2] ?? m[3]!.toLowerCase() };
}

/**
 * "cached plan must not change result type" (DDL under a prepared statement, PgBouncer #1038):
 * give the statement a new server-side name, so every server prepares it afresh with the new
 * result type instead of each failing once. The stale copies go when their servers close.
 */
export function invalidate(st: Statement): void {
  st.serverName = `PGPOOL_${nextStatement++}`;
}

/** Counters the console shows (PgBouncer's client/server parse and bind counts). */
export interface StatementStats {
  clientParses: number;
  serverParses: number;
  binds: number;
}

/** Why the pooler closes a client instead of forwarding its message: the error it is sent, and
 * the line logged first (PgBouncer's words for both). */
export interface Refusal {
  readonly logLine: string;
  readonly error: PoolerError;
}

/** One client's named statements: its own names to the pooler-wide statements. */
export class ClientStatements {
  private readonly named = new Map<string, Statement>();
  /** Names whose latest Parse PostgreSQL refused or skipped: a new Parse may take them. */
  private readonly unparsed = new Set<string>();

  constructor(
    /** max_prepared_statements: statements one server keeps (read again after each reload). */
    public max: number,
    private readonly stats: StatementStats,
  ) {}

  get size(): number {
    return this.named.size;
  }

  /**
   * Decided on the message where it lies (`buf[start, end)` is its body, nothing is allocated):
   * true when a Parse, Bind, Describe or Close names no statement and goes to the server as it
   * is (the reply it is owed is noted); false when it must go through rewrite(). Most
   * extended-protocol traffic (unnamed statements) ends here.
   */
  passesUnchanged(type: number, buf: Buffer, start: number, end: number, server: PreparedServer): boolean {
    const z = cstrIn(buf, start, end);
    switch (type) {
      case Frontend.Parse: {
        // An unnamed Parse may be DEALLOCATE/DISCARD in disguise (psycopg 3): rewrite() looks.
        const first = start + 1 < end ? buf[start + 1]! : 0;
        if (z === start && (first | 0x20) !== 0x64 && first !== 0x20) {
          server.replies.push(Reply.PassParse);
          return true;
        }
        if (z >= 0) return false;
        server.replies.push(Reply.PassParse);
        return true;
      }
      case Frontend.Bind: {
        // Portal name, then the statement's.
        const name = z < 0 ? -1 : cstrIn(buf, z + 1, end);
        return name < 0 || name === z + 1;
      }
      case Frontend.Describe:
      case Frontend.Close: {
        if (buf[start] === 0x53 /* S */) {
          const name = cstrIn(buf, start + 1, end);
          if (name > start + 1) return false;
        }
        if (type === Frontend.Close) server.replies.push(Reply.PassClose);
        return true;
      }
      default:
        return true;
    }
  }

  /**
   * Whether one client message of type P, B, D or C (given its body) is sent as replaced by the
   * messages pushed on `out` (true) or unchanged (false), or refused.
   */
  rewrite(type: number, body: Buffer, server: PreparedServer, out: Buffer[]): boolean | Refusal {
    if (this.passesUnchanged(type, body, 0, body.length, server)) return false;
    switch (type) {
      case Frontend.Parse: {
        const z = cstrEnd(body, 0);
        if (z === 0) return this.unnamedParse(body, server, out);
        const name = body.toString('utf8', 0, z);
        if (this.named.has(name)) {
          if (!this.unparsed.has(name)) {
            return { logLine: `prepared statement '${name}' was already prepared`, error: Errors.protocolViolation('prepared statement name is already in use') };
          }
          this.unbind(name);
        }
        this.stats.clientParses++;
        const st = statementFor(body.subarray(z + 1));
        this.bind(name, st);
        const failed = () => {
          if (this.named.get(name) === st) this.unparsed.add(name);
        };
        if (server.prepared.has(st.serverName)) {
          touch(server, st.serverName);
          // The server has it already: parse the same text under a scratch name, closed at once,
          // so the client's ParseComplete lands where it expects one and its own unnamed
          // statement is left alone.
          out.push(message(Frontend.Parse, SCRATCH, st.definition), CLOSE_SCRATCH);
          server.replies.push(Reply.PassParse, failed);
          server.replies.push(Reply.SwallowClose);
        } else {
          this.place(st, server, out, Reply.PassParse, failed);
        }
        return true;
      }
      case Frontend.Bind: {
        const p = cstrEnd(body, 0);
        const z = cstrEnd(body, p + 1);
        const requested = body.toString('utf8', p + 1, z);
        const st = this.named.get(requested);
        if (st === undefined) return notPrepared(requested);
        this.ensure(st, server, out);
        this.stats.binds++;
        server.lastBound = st;
        out.push(message(Frontend.Bind, body.subarray(0, p + 1), st.serverName, body.subarray(z + 1)));
        return true;
      }
      case Frontend.Describe:
      case Frontend.Close: {
        const z = cstrEnd(body, 1);
        const name = body.toString('utf8', 1, z);
        const st = this.named.get(name);
        if (type === Frontend.Close) {
          // The server-side statement stays for other clients; the client gets its CloseComplete.
          this.unbind(name);
          out.push(CLOSE_NOTHING);
          server.replies.push(Reply.PassClose);
          return true;
        }
        if (st === undefined) return notPrepared(name);
        this.ensure(st, server, out);
        out.push(message(Frontend.Describe, Buffer.from('S'), st.serverName));
        return true;
      }
      default:
        return false;
    }
  }

  /**
   * An unnamed Parse passes unchanged, unless its text is DEALLOCATE or DISCARD ALL (psycopg 3
   * sends those with the extended protocol): they must act on the client's own statements.
   */
  private unnamedParse(body: Buffer, server: PreparedServer, out: Buffer[]): boolean {
    const end = cstrEnd(body, 1);
    const first = body[1] ?? 0;
    const d = end > 1 && end < 300 && ((first | 0x20) === 0x64 || first === 0x20) ? deallocation(body.toString('utf8', 1, end)) : null;
    if (d !== null && 'all' in d) this.dropAll(d.discard, server);
    const st = d !== null && 'name' in d ? this.named.get(d.name) : undefined;
    if (st === undefined || d === null || !('name' in d)) {
      server.replies.push(Reply.PassParse);
      return false;
    }
    // DEALLOCATE of the client's statement: drop the pooler's statement on this server (placing
    // it first if it never was, so PostgreSQL's answer is the one the client expects).
    this.unbind(d.name);
    this.ensure(st, server, out);
    server.prepared.delete(st.serverName);
    const sql = Buffer.concat([Buffer.from(`DEALLOCATE "${st.serverName}"\0`), Buffer.from([0, 0])]);
    out.push(message(Frontend.Parse, '', sql));
    server.replies.push(Reply.PassParse);
    return true;
  }

  /** Make sure the linked server has the statement, adding a Parse whose reply is swallowed. */
  private ensure(st: Statement, server: PreparedServer, out: Buffer[]): void {
    if (server.prepared.has(st.serverName)) touch(server, st.serverName);
    else this.place(st, server, out, Reply.SwallowParse);
  }

  private place(st: Statement, server: PreparedServer, out: Buffer[], reply: Reply, failed: Undo | null = null): void {
    // At the limit, close the least recently used statements for real (their replies swallowed),
    // so a server does not grow without bound; a lowered limit takes them down to it.
    for (const victim of server.prepared.keys()) {
      if (server.prepared.size < this.max) break;
      server.prepared.delete(victim);
      out.push(message(Frontend.Close, Buffer.from('S'), victim));
      server.replies.push(Reply.SwallowClose, () => server.prepared.set(victim, true));
    }
    out.push(message(Frontend.Parse, st.serverName, st.definition));
    this.stats.serverParses++;
    server.prepared.set(st.serverName, true);
    // Refused or skipped by PostgreSQL: the server does not have it after all.
    const name = st.serverName;
    server.replies.push(reply, () => {
      server.prepared.delete(name);
      failed?.();
    });
  }

  /**
   * SQL DEALLOCATE of one of the client's statements: forget it and return the server-side name
   * to deallocate on the linked server (other clients there prepare it again if they need it).
   */
  forget(name: string): string | null {
    const st = this.named.get(name);
    if (st === undefined) return null;
    this.unbind(name);
    return st.serverName;
  }

  /**
   * DEALLOCATE ALL or DISCARD ALL from the client, in SQL or as an unnamed Parse: its statements
   * go, and the server drops every statement it has, those other clients rely on too, so the
   * pooler forgets them all there and prepares them again where needed. DISCARD ALL fails inside
   * a transaction block, and then nothing is dropped.
   */
  dropAll(discard: boolean, server: PreparedServer): void {
    if (discard && server.inTransaction) return;
    this.clear();
    server.prepared.clear();
  }

  /** The client is gone (or dropAll): forget its statements. */
  clear(): void {
    for (const name of [...this.named.keys()]) this.unbind(name);
  }

  private bind(name: string, st: Statement): void {
    st.refs++;
    this.named.set(name, st);
  }

  private unbind(name: string): void {
    const st = this.named.get(name);
    if (st === undefined) return;
    this.named.delete(name);
    this.unparsed.delete(name);
    if (--st.refs === 0 && statements.get(st.key) === st) statements.delete(st.key);
  }
}

/** A Bind or Describe of a name the client never prepared (PgBouncer's words). The pooler's own
 * server-side names are not the client's either, so they cannot reach another client's statement. */
function notPrepared(name: string): Refusal {
  return { logLine: `prepared statement '${name}' not found`, error: Errors.protocolViolation('prepared statement did not exist') };
}

function touch(server: PreparedServer, name: string): void {
  server.prepared.delete(name);
  server.prepared.set(name, true);
}
