// The pooler-wide statement table: a statement lives while some client holds a name for it, so
// a pooler serving ever new statement texts does not keep them all (hardening F8).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClientStatements, Reply, ReplyQueue, statementCount, type PreparedServer } from '../../src/client/prepared.js';

const PARSE = 0x50;
const BIND = 0x42;
const DESCRIBE = 0x44;
const CLOSE = 0x43;

/** A Parse body: name, query text, no parameter types. */
function parseBody(name: string, sql: string): Buffer {
  return Buffer.concat([Buffer.from(`${name}\0${sql}\0`), Buffer.from([0, 0])]);
}

/** A Bind body: unnamed portal, the statement, no parameters, no result formats. */
function bindBody(stmt: string): Buffer {
  return Buffer.concat([Buffer.from(`\0${stmt}\0`), Buffer.from([0, 0, 0, 0, 0, 0])]);
}

function server(): PreparedServer {
  return { inTransaction: false, prepared: new Map(), lastBound: null, replies: new ReplyQueue() };
}

function client(): ClientStatements {
  return new ClientStatements(200, { clientParses: 0, serverParses: 0, binds: 0 });
}

describe('pooler-wide prepared statements', () => {
  it('forgets the statements of clients that are gone, and keeps those another client still names', () => {
    const base = statementCount();
    const s = server();
    const a = client();
    const b = client();
    for (let i = 0; i < 1000; i++) a.rewrite(PARSE, parseBody(`a${i}`, `SELECT ${i} /* unique to a */`), s, []);
    b.rewrite(PARSE, parseBody('shared', 'SELECT 1 /* shared */'), s, []);
    a.rewrite(PARSE, parseBody('shared', 'SELECT 1 /* shared */'), s, []);
    assert.equal(statementCount(), base + 1001);

    a.clear();
    assert.equal(statementCount(), base + 1, 'the statement b still names stays');
    b.rewrite(CLOSE, Buffer.from('Sshared\0'), s, []);
    assert.equal(statementCount(), base);
  });

  it('keeps the name of a statement whose Parse the server refused; only the server forgets it (as PgBouncer)', () => {
    // psycopg binds a statement of a failed pipeline later, expecting the pooler to parse it
    // again (PgBouncer's test_prepared_failed_prepare_pipeline); the name went with the undo.
    const base = statementCount();
    const s = server();
    const c = client();
    c.rewrite(PARSE, parseBody('bad', 'SELEC oops'), s, []);
    assert.equal(statementCount(), base + 1);
    assert.equal(s.prepared.size, 1);
    // The ErrorResponse: PostgreSQL skips to Sync, and the pooler undoes what the server got.
    s.replies.dropUntilSync();
    assert.equal(s.prepared.size, 0);
    assert.equal(c.size, 1);
    assert.equal(statementCount(), base + 1);
    // A Bind parses it again on the server first.
    const out: Buffer[] = [];
    assert.equal(c.rewrite(BIND, bindBody('bad'), s, out), true);
    assert.deepEqual(out.map((m) => String.fromCharCode(m[0]!)), ['P', 'B']);
    // Unlike a name PostgreSQL took, one it refused may be parsed again (the table exists now).
    assert.equal(c.rewrite(PARSE, parseBody('bad', 'SELECT 1 /* fixed */'), s, []), true);
    assert.equal(c.size, 1);
    c.clear();
    assert.equal(statementCount(), base);
  });

  it('refuses a Parse of a name the client holds, and a Bind or Describe of one it never prepared', () => {
    const s = server();
    const c = client();
    assert.equal(c.rewrite(PARSE, parseBody('held', 'SELECT 1'), s, []), true);
    const again = c.rewrite(PARSE, parseBody('held', 'SELECT 2'), s, []);
    assert.ok(typeof again === 'object');
    assert.equal(again.logLine, "prepared statement 'held' was already prepared");
    assert.deepEqual([again.error.sqlstate, again.error.message], ['08P01', 'prepared statement name is already in use']);
    for (const [type, body] of [[BIND, bindBody('never')], [DESCRIBE, Buffer.from('Snever\0')]] as const) {
      const r = c.rewrite(type, body, s, []);
      assert.ok(typeof r === 'object');
      assert.equal(r.logLine, "prepared statement 'never' not found");
      assert.equal(r.error.message, 'prepared statement did not exist');
    }
    c.clear();
  });

  it('a lowered max_prepared_statements takes a server down to it at the next statement placed there', () => {
    const s = server();
    const c = client();
    for (let i = 0; i < 5; i++) c.rewrite(PARSE, parseBody(`s${i}`, `SELECT ${i} /* lowered */`), s, []);
    assert.equal(s.prepared.size, 5);
    c.max = 2;
    const out: Buffer[] = [];
    c.rewrite(PARSE, parseBody('s5', 'SELECT 5 /* lowered */'), s, out);
    // Four Closes of the least recently used, then the Parse.
    assert.deepEqual(out.map((m) => String.fromCharCode(m[0]!)).join(''), 'CCCCP');
    assert.equal(s.prepared.size, 2);
    c.clear();
  });
});

describe('the replies a server owes (ReplyQueue)', () => {
  it('emptied by shift, it starts over in place and keeps its order', () => {
    const q = new ReplyQueue();
    for (let round = 0; round < 3; round++) {
      q.push(Reply.PassParse);
      q.push(Reply.Sync);
      assert.equal(q.length, 2);
      assert.equal(q.shift(), Reply.PassParse);
      assert.equal(q.peek(), Reply.Sync);
      assert.equal(q.shift(), Reply.Sync);
      assert.equal(q.length, 0);
      assert.equal(q.peek(), undefined);
      assert.equal(q.shift(), undefined);
    }
  });

  it('an undo runs only for the replies an error skipped', () => {
    const q = new ReplyQueue();
    const undone: string[] = [];
    q.push(Reply.PassParse, () => undone.push('first'));
    assert.equal(q.shift(), Reply.PassParse); // answered: its undo must never run
    q.push(Reply.SwallowParse, () => undone.push('skipped'));
    q.push(Reply.Sync);
    q.push(Reply.PassClose, () => undone.push('after sync'));
    q.dropUntilSync();
    assert.deepEqual(undone, ['skipped']);
    assert.equal(q.length, 2);
    assert.equal(q.shift(), Reply.Sync);
    assert.equal(q.shift(), Reply.PassClose);
    assert.deepEqual(undone, ['skipped']);
  });
});
