// The bound on concurrent client TLS handshakes: FIFO hand-over of slots, withdrawal of a client
// that leaves while waiting, and no slot lost or invented on the way.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HandshakeGate } from '../../src/net/tls.js';

describe('HandshakeGate', () => {
  it('starts up to the limit at once and the rest in arrival order as slots free', () => {
    const gate = new HandshakeGate(2);
    const started: number[] = [];
    const withdraw = [1, 2, 3, 4].map((n) => gate.enter(() => started.push(n)));
    assert.deepEqual(started, [1, 2]);
    assert.equal(withdraw[0], null, 'a handshake started at once has nothing to withdraw');
    assert.equal(typeof withdraw[2], 'function');
    gate.leave();
    assert.deepEqual(started, [1, 2, 3]);
    gate.leave();
    assert.deepEqual(started, [1, 2, 3, 4]);
  });

  it('skips a client withdrawn while waiting, and frees its slot count when nobody waits', () => {
    const gate = new HandshakeGate(1);
    const started: string[] = [];
    gate.enter(() => started.push('a'));
    const withdrawB = gate.enter(() => started.push('b'));
    gate.enter(() => started.push('c'));
    withdrawB?.();
    gate.leave();
    assert.deepEqual(started, ['a', 'c']);
    gate.leave();
    // The one slot is free again: the next client starts at once.
    assert.equal(gate.enter(() => started.push('d')), null);
    assert.deepEqual(started, ['a', 'c', 'd']);
  });
});
