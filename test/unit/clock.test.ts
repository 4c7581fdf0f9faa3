// The cached clock on the addon's monotonic milliseconds (src/clock.ts): it moves by the source's
// differences, across the source's wrap at 2^30, and the janitor's sync puts it back on the wall
// clock. Without the addon, refresh is Date.now().

import assert from 'node:assert/strict';
import { it } from 'node:test';
import { monotonicMs } from '../../src/net/native.js';
import * as clock from '../../src/clock.js';

it('moves by the monotonic source, across its wrap, and syncs to the wall clock', () => {
  let tick = 2 ** 30 - 3;
  clock.useMonotonic(() => tick);
  const start = clock.now;
  assert.ok(Math.abs(start - Date.now()) < 1000);
  tick += 2;
  assert.equal(clock.refresh(), start + 2);
  tick = 4; // wrapped: 2^30 - 1 → 2^30 + 4 is 5 ms later
  assert.equal(clock.refresh(), start + 7);
  assert.equal(clock.refresh(), start + 7, 'no change without a tick');
  const walled = clock.sync();
  assert.ok(Math.abs(walled - Date.now()) < 1000);
  tick += 10;
  assert.equal(clock.refresh(), walled + 10);
});

it("the addon's monotonicMs is a non-negative integer below 2^30 that does not go back", (t) => {
  const fn = monotonicMs();
  if (fn === null) return t.skip('native addon not built (npm run build:native)');
  const a = fn();
  const b = fn();
  for (const v of [a, b]) assert.ok(Number.isInteger(v) && v >= 0 && v < 2 ** 30, String(v));
  assert.ok(((b - a) & 0x3fffffff) < 1000);
});
