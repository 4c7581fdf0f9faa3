// The addon's malloc_trim: callable at any time, and it hands back memory freed in C (what closed
// TLS connections leave behind) — shown here with Buffers allocated outside V8's heap.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { it } from 'node:test';
import { peerCredAvailable, trimHeap } from '../../src/net/peercred.js';

const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1]);

it('trimHeap returns memory that small native allocations left behind', (t) => {
  if (!peerCredAvailable()) return t.skip('native addon not built (npm run build:native)');
  // Many small allocations (below glibc's mmap threshold) interleaved with a few kept ones: what
  // is freed around the kept ones stays in the heap until a trim.
  const kept: Buffer[] = [];
  let churn: Buffer[] = [];
  for (let i = 0; i < 200_000; i++) {
    const b = Buffer.allocUnsafeSlow(1024);
    if (i % 1000 === 0) kept.push(b);
    else churn.push(b);
  }
  churn = [];
  (globalThis as { gc?: () => void }).gc?.();
  const before = rssKiB();
  assert.equal(typeof trimHeap(), 'boolean');
  assert.ok(rssKiB() <= before, 'a trim never grows the process');
  assert.equal(kept.length, 200);
});
