// Pooler-minted cancel keys in PgBouncer 1.21+'s layout (src/proto.c welcome_client, src/objects.c
// accept_cancel_request): peer_id in bytes 1 and 2 little-endian, forwards left in the low two bits
// of the last byte, the process id positive; and the routing of a CancelRequest by that layout.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CancelKeys, cancelKey, routeCancel } from '../../src/client/cancel-keys.js';

/** A key as PgBouncer 1.24's welcome_client mints it for peer_id `id` (8 bytes). */
function pgbouncerKey(id: number): Buffer {
  const k = Buffer.from([0x9a, 0, 0, 0x11, 0x22, 0x33, 0x44, 0x54]);
  k[1] = id & 0xff;
  k[2] = (id >> 8) & 0xff;
  k[7] = k[7]! | 0x03;
  k[0] = k[0]! & 0x7f;
  return k;
}

describe('minting', () => {
  it('peering off: a random key, its process id positive and not 0; 4- and 32-byte secrets', () => {
    const keys = new CancelKeys<string>();
    for (const len of [4, 32]) {
      for (let i = 0; i < 200; i++) {
        const k = keys.mint(len, { peerId: 0, worker: 0 }, 'c');
        assert.equal(k.length, 4 + len);
        assert.ok(k.readInt32BE(0) > 0);
      }
    }
  });

  it('peer_id in bytes 1-2 (little-endian), three forwards in the last byte, as PgBouncer; the worker in byte 3', () => {
    const keys = new CancelKeys<string>();
    for (const len of [4, 32]) {
      const k = keys.mint(len, { peerId: 0x1234, worker: 0 }, 'c');
      assert.equal(k[1], 0x34);
      assert.equal(k[2], 0x12);
      assert.equal(k[k.length - 1]! & 0x03, 0x03);
      assert.equal(k[0]! & 0x80, 0);
      const w = keys.mint(len, { peerId: 7, worker: 3 }, 'c');
      assert.deepEqual([w[1], w[2], w[3]], [7, 0, 3]);
    }
  });

  it('never hands out a key that is in use; get and delete by the whole key', () => {
    const keys = new CancelKeys<number>();
    const seen = new Set<string>();
    const minted: Buffer[] = [];
    // Peering and a worker leave 37 random bits: still no repeat among live keys.
    for (let i = 0; i < 5_000; i++) {
      const k = keys.mint(4, { peerId: 1, worker: 1 }, i);
      assert.ok(!seen.has(k.toString('hex')));
      seen.add(k.toString('hex'));
      minted.push(k);
    }
    assert.equal(keys.get(minted[42]!), 42);
    keys.delete(minted[42]!);
    assert.equal(keys.get(minted[42]!), undefined);
  });
});

describe('routing a CancelRequest', () => {
  it('peering off: every key is looked up here, as it came', () => {
    const k = pgbouncerKey(5);
    assert.deepEqual(routeCancel(k, { peerId: 0, worker: 0 }), { to: 'local', key: k });
  });

  it('our own peer id: looked up with the forwards-left bits restored to 3', () => {
    const k = pgbouncerKey(2);
    k[7] = (k[7]! & 0xfc) | 0x01;
    const r = routeCancel(k, { peerId: 2, worker: 0 });
    assert.equal(r.to, 'local');
    assert.deepEqual(r.to === 'local' ? r.key : null, pgbouncerKey(2));
  });

  it('another peer id (a PgBouncer key too): forwarded with one forward spent, down to none', () => {
    let k = pgbouncerKey(300);
    for (const left of [2, 1, 0]) {
      const r = routeCancel(k, { peerId: 1, worker: 0 });
      assert.equal(r.to, 'peer');
      if (r.to !== 'peer') return;
      assert.equal(r.peerId, 300);
      assert.equal(r.key[7]! & 0x03, left);
      assert.deepEqual(r.key.subarray(0, 7), k.subarray(0, 7));
      k = r.key;
    }
    assert.deepEqual(routeCancel(k, { peerId: 1, worker: 0 }), { to: 'drop', reason: 'failed to forward cancel request because its TTL was exhausted' });
  });

  it('a 3.2 long key: the same bytes, forwards left in its last byte', () => {
    const key = cancelKey(0x01050000 | 0x0009, Buffer.alloc(32, 0xff));
    const r = routeCancel(key, { peerId: 1, worker: 0 });
    assert.equal(r.to, 'peer');
    if (r.to === 'peer') {
      assert.equal(r.peerId, 5);
      assert.equal(r.key[35], 0xfe);
    }
  });

  it('another worker of this instance: handed to it unchanged', () => {
    const keys = new CancelKeys<string>();
    const k = keys.mint(4, { peerId: 3, worker: 2 }, 'c');
    assert.deepEqual(routeCancel(k, { peerId: 3, worker: 1 }), { to: 'worker', worker: 2, key: k });
    assert.equal(routeCancel(k, { peerId: 3, worker: 2 }).to, 'local');
    assert.equal(routeCancel(k, { peerId: 4, worker: 2 }).to, 'peer');
  });
});
