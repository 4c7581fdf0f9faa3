// The addon's malloc_trim, as the janitor calls it: at any time, answering whether memory went
// back to the system, and never growing the process. (What it is for — RSS after thousands of
// closed TLS connections — is measured with bench/loadclient.js: docs/operations.md.)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { it } from 'node:test';
import { peerCredAvailable } from '../../src/net/peercred.js';
import { trimHeap } from '../../src/net/native.js';

const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1]);

it('trimHeap can be called at any time, says whether memory was released, and never grows the process', (t) => {
  if (!peerCredAvailable()) return t.skip('native addon not built (npm run build:native)');
  // Small allocations outside V8's heap, freed: something for a trim to find.
  for (let i = 0; i < 100_000; i++) Buffer.allocUnsafeSlow(1024);
  const before = rssKiB();
  assert.equal(typeof trimHeap(), 'boolean');
  assert.ok(rssKiB() <= before);
});
