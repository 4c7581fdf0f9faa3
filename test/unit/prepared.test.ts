// The pooler-wide statement table: a statement lives while some client holds a name for it, so
// a pooler serving ever new statement texts does not keep them all (hardening F8).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClientStatements, ReplyQueue, statementCount, type PreparedServer } from '../../src/client/prepared.js';

const PARSE = 0x50;
const CLOSE = 0x43;

/** A Parse body: name, query text, no parameter types. */
function parseBody(name: string, sql: string): Buffer {
  return Buffer.concat([Buffer.from(`${name}\0${sql}\0`), Buffer.from([0, 0])]);
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

  it('forgets a statement whose Parse the server refused (its undo runs)', () => {
    const base = statementCount();
    const s = server();
    const c = client();
    c.rewrite(PARSE, parseBody('bad', 'SELEC oops'), s, []);
    assert.equal(statementCount(), base + 1);
    // The ErrorResponse: PostgreSQL skips to Sync, and the pooler undoes what the Parse recorded.
    s.replies.dropUntilSync();
    assert.equal(statementCount(), base);
    assert.equal(c.size, 0);
  });
});
