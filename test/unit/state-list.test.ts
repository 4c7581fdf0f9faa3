// pool/list.ts: the pools' state lists (cl_waiting, sv_idle, …) with links in their members.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StateList } from '../../src/pool/list.js';

class Member {
  prevInList: unknown = null;
  nextInList: unknown = null;
  inList: unknown = null;
  constructor(readonly name: string) {}
}

const names = (l: StateList<Member>) => [...l].map((m) => m.name);

test('members keep insertion order, leave from anywhere, and move between lists one at a time', () => {
  const waiting = new StateList<Member>();
  const active = new StateList<Member>();
  const [a, b, c] = [new Member('a'), new Member('b'), new Member('c')];
  waiting.add(a).add(b).add(c);
  assert.deepEqual(names(waiting), ['a', 'b', 'c']);
  assert.equal(waiting.first(), a);
  assert.equal(waiting.size, 3);
  waiting.add(b);
  assert.equal(waiting.size, 3, 'adding a member twice changes nothing');
  active.add(b);
  assert.deepEqual(names(waiting), ['a', 'c']);
  assert.deepEqual(names(active), ['b']);
  assert.ok(active.has(b) && !waiting.has(b));
  assert.equal(waiting.delete(b), false);
  assert.equal(waiting.delete(a), true);
  assert.equal(waiting.first(), c);
  assert.equal(waiting.delete(c), true);
  assert.equal(waiting.first(), undefined);
  assert.equal(waiting.size, 0);
  assert.deepEqual(names(waiting), []);
});

test('the member being visited may leave the list during a walk', () => {
  const list = new StateList<Member>();
  const members = ['a', 'b', 'c', 'd'].map((n) => new Member(n));
  for (const m of members) list.add(m);
  const visited: string[] = [];
  for (const m of list) {
    visited.push(m.name);
    if (m.name !== 'c') list.delete(m);
  }
  assert.deepEqual(visited, ['a', 'b', 'c', 'd']);
  assert.deepEqual(names(list), ['c']);
});
