// The pure parts of a multi-worker instance: the limits its main process counts for all workers
// (cluster/limits.ts), and one SHOW for the instance out of every worker's (admin/merge.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeShow } from '../../src/admin/merge.js';
import type { ResultSet } from '../../src/admin/show.js';
import { InstanceLimits, type SlotAsk } from '../../src/cluster/limits.js';

const ask = (over: Partial<SlotAsk> = {}): SlotAsk => ({ pool: 'p0\0u', db: 'p0', user: 'u', cap: 2, maxDb: 0, maxUser: 0, ...over });

describe('instance limits', () => {
  it('clients: max_client_conn, then the database, then the user; leave() makes room', () => {
    const l = new InstanceLimits();
    const c = { db: 'p0', user: 'u', maxClients: 3, maxDb: 2, maxUser: 0 };
    assert.equal(l.admit(1, c), null);
    assert.equal(l.admit(2, c), null);
    assert.equal(l.admit(1, c), 'max_db_client_connections');
    assert.equal(l.admit(2, { ...c, db: 'p1' }), null);
    assert.equal(l.admit(1, { ...c, db: 'p2' }), 'max_client_conn');
    l.leave(1, 'p0', 'u');
    assert.equal(l.admit(2, c), null);
    assert.equal(l.admit(1, { ...c, user: 'v', maxUser: 1 }), 'max_client_conn');
  });

  it('server slots: granted up to the cap across workers, then queued in order, granted as they free', () => {
    const l = new InstanceLimits();
    assert.equal(l.requestSlot({ worker: 1, id: 1, ask: ask() }), true);
    assert.equal(l.requestSlot({ worker: 2, id: 1, ask: ask() }), true);
    assert.equal(l.requestSlot({ worker: 2, id: 2, ask: ask() }), false);
    assert.equal(l.requestSlot({ worker: 1, id: 2, ask: ask() }), false);
    // Another pool of the same database is not held up by this one.
    assert.equal(l.requestSlot({ worker: 1, id: 3, ask: ask({ pool: 'p0\0v', user: 'v' }) }), true);
    assert.deepEqual(l.releaseSlot(1, ask()).map((r) => [r.worker, r.id]), [[2, 2]]);
    assert.equal(l.servers('pool', 'p0\0u'), 2);
    assert.deepEqual(l.workerGone(2).map((r) => [r.worker, r.id]), [[1, 2]]);
    assert.equal(l.servers('pool', 'p0\0u'), 1);
    assert.equal(l.servers('db', 'p0'), 2);
  });

  it('max_db_connections and max_user_connections span pools; eviction is asked of the workers holding servers', () => {
    const l = new InstanceLimits();
    assert.equal(l.requestSlot({ worker: 1, id: 1, ask: ask({ pool: 'a', cap: 10, maxDb: 2 }) }), true);
    assert.equal(l.requestSlot({ worker: 2, id: 1, ask: ask({ pool: 'b', cap: 10, maxDb: 2 }) }), true);
    const waiting = { worker: 2, id: 2, ask: ask({ pool: 'c', cap: 10, maxDb: 2 }) };
    assert.equal(l.requestSlot(waiting), false);
    // By database: the asking worker's own idle server of another pool counts too.
    assert.deepEqual(l.evictionCandidates(waiting).map((c) => [c.worker, c.by, c.name]).sort(), [[1, 'db', 'p0'], [2, 'db', 'p0']]);
    const byPool = { worker: 2, id: 3, ask: ask({ pool: 'a', cap: 1 }) };
    assert.equal(l.requestSlot(byPool), false);
    assert.deepEqual(l.evictionCandidates(byPool).map((c) => [c.worker, c.by]), [[1, 'pool']]);
  });
});

const cols = (names: string) => names.split(' ').map((name) => ({ name, typeOid: 25 }));

describe('one SHOW for the instance', () => {
  it('POOLS: one row per pool, counts summed, the longest maxwait, settings once, sorted', () => {
    const c = cols('database user cl_active cl_waiting sv_idle maxwait maxwait_us pool_mode');
    const a: ResultSet = { columns: c, rows: [['p1', 'u', 1, 0, 2, 0, 500, 'transaction'], ['p0', 'u', 2, 1, 0, 1, 10, 'transaction']] };
    const b: ResultSet = { columns: c, rows: [['p0', 'u', 3, 0, 1, 0, 900_000, 'transaction']] };
    assert.deepEqual(mergeShow('pools', [a, b]).rows, [
      ['p0', 'u', 5, 1, 1, 1, 10, 'transaction'],
      ['p1', 'u', 1, 0, 2, 0, 500, 'transaction'],
    ]);
  });

  it('STATS: totals summed, mean times weighted by their counts', () => {
    const c = cols('database total_xact_count avg_xact_count avg_xact_time avg_query_count avg_query_time avg_server_assignment_count avg_wait_time');
    const a: ResultSet = { columns: c, rows: [['p0', 10, 1, 100, 0, 0, 1, 40]] };
    const b: ResultSet = { columns: c, rows: [['p0', 30, 3, 200, 2, 50, 0, 0]] };
    assert.deepEqual(mergeShow('stats', [a, b]).rows, [['p0', 40, 4, 175, 2, 50, 1, 40]]);
  });

  it("CLIENTS: every worker's rows; LISTS and STATE by their meaning; CONFIG from the first", () => {
    const clients = cols('type user id');
    assert.equal(mergeShow('clients', [{ columns: clients, rows: [['C', 'u', 2]] }, { columns: clients, rows: [['C', 'u', 3]] }]).rows.length, 2);
    const lists = cols('list items');
    const l = (used: number): ResultSet => ({ columns: lists, rows: [['databases', 2], ['used_clients', used]] });
    assert.deepEqual(mergeShow('lists', [l(3), l(4)]).rows, [['databases', 2], ['used_clients', 7]]);
    const state = cols('key value');
    const s = (paused: string): ResultSet => ({ columns: state, rows: [['active', paused === 'yes' ? 'no' : 'yes'], ['paused', paused]] });
    assert.deepEqual(mergeShow('state', [s('no'), s('yes')]).rows, [['active', 'no'], ['paused', 'yes']]);
    const config = cols('key value');
    assert.deepEqual(mergeShow('config', [{ columns: config, rows: [['a', '1']] }, { columns: config, rows: [['a', '1']] }]).rows, [['a', '1']]);
  });
});
