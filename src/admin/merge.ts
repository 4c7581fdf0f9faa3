// One SHOW for a whole multi-worker instance, from the same SHOW run in every worker. Connection
// listings (CLIENTS, SERVERS, SOCKETS) are every worker's rows together: connection ids are unique
// in the instance (ids.ts). The others are totals: rows with the same key (a pool's database and
// user, a database's name, …) become one, their counts summed, their settings taken from the
// first worker, their maxima kept and their mean times weighted by the counts they are means of.
// Pure: result sets in, one result set out.
import type { Cell, ResultSet } from './show.js';

/** SHOWs whose rows are connections: listed from every worker. */
const LISTINGS = new Set(['clients', 'servers', 'sockets', 'active_sockets']);

/** The key columns of each keyed SHOW; a SHOW not named here keeps the first worker's rows. */
const KEYS: Readonly<Record<string, readonly string[]>> = {
  pools: ['database', 'user'],
  databases: ['name'],
  users: ['name'],
  stats: ['database'],
  stats_totals: ['database'],
  stats_averages: ['database'],
  peer_pools: ['peer_id'],
  lists: ['list'],
  state: ['key'],
  totals: ['name'],
  dns_hosts: ['hostname'],
};

/** Keyed SHOWs PgBouncer prints sorted by their key. */
const SORTED = new Set(['pools', 'users', 'stats', 'stats_totals', 'stats_averages', 'peer_pools']);

/** Counts that add up across workers. */
const SUMMED = new Set([
  'cl_active', 'cl_waiting', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active', 'sv_active_cancel',
  'sv_being_canceled', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login', 'current_connections', 'current_client_connections',
]);

/** Mean times and the per-second count each one is a mean over (SHOW STATS, STATS_AVERAGES). */
const WEIGHTS: Readonly<Record<string, string>> = {
  avg_xact_time: 'avg_xact_count',
  avg_query_time: 'avg_query_count',
  avg_wait_time: 'avg_server_assignment_count',
};
const AVERAGES_WEIGHTS: Readonly<Record<string, string>> = {
  xact_time: 'xact_count',
  query_time: 'query_count',
  wait_time: 'server_assignment_count',
};

/** SHOW LISTS rows that count configuration (the same in every worker), not live objects. */
const CONFIG_LISTS = new Set(['databases', 'users', 'peers', 'pools', 'peer_pools', 'dns_names', 'dns_zones']);

type Rule = 'first' | 'sum' | 'max' | { mean: number };

function rulesFor(show: string, names: readonly string[]): Rule[] {
  const at = (n: string): number => names.indexOf(n);
  return names.map((n): Rule => {
    if (show === 'stats' || show === 'stats_totals' || show === 'stats_averages') {
      const w = (show === 'stats_averages' ? AVERAGES_WEIGHTS : WEIGHTS)[n];
      if (w !== undefined) return { mean: at(w) };
      return n === 'database' ? 'first' : 'sum';
    }
    if (SUMMED.has(n)) return 'sum';
    if (n === 'paused' || n === 'disabled') return 'max';
    return 'first';
  });
}

function num(c: Cell | undefined): number {
  return typeof c === 'number' ? c : Number(c ?? 0);
}

/** Merge keyed rows: `fold` combines a row into the one kept for its key. */
function byKey(sets: readonly ResultSet[], keyCols: number[], fold: (into: Cell[], row: readonly Cell[]) => void): Cell[][] {
  const out = new Map<string, Cell[]>();
  for (const rs of sets) {
    for (const row of rs.rows) {
      const key = JSON.stringify(keyCols.map((k) => row[k]));
      const kept = out.get(key);
      if (kept === undefined) out.set(key, [...row]);
      else fold(kept, row);
    }
  }
  return [...out.values()];
}

/** SHOW <show> for the instance, from each worker's answer (in worker order). */
export function mergeShow(show: string, sets: readonly ResultSet[]): ResultSet {
  const first = sets[0];
  if (first === undefined) throw new Error('bug: no result set to merge');
  const columns = first.columns;
  if (LISTINGS.has(show)) return { columns, rows: sets.flatMap((rs) => rs.rows) };
  const keyNames = KEYS[show];
  if (keyNames === undefined) return first;
  const names = columns.map((c) => c.name);
  const keyCols = keyNames.map((k) => names.indexOf(k));
  let rows: Cell[][];
  if (show === 'lists') {
    rows = byKey(sets, keyCols, (into, row) => {
      into[1] = CONFIG_LISTS.has(String(into[0])) ? Math.max(num(into[1]), num(row[1])) : num(into[1]) + num(row[1]);
    });
  } else if (show === 'state') {
    // The instance is active only if every worker is; paused or suspended if any is.
    rows = byKey(sets, keyCols, (into, row) => {
      into[1] = into[0] === 'active' ? (into[1] === 'yes' && row[1] === 'yes' ? 'yes' : 'no') : into[1] === 'yes' || row[1] === 'yes' ? 'yes' : 'no';
    });
  } else if (show === 'totals') {
    rows = mergeTotals(sets, keyCols);
  } else if (show === 'pools') {
    const wait = names.indexOf('maxwait');
    const rules = rulesFor(show, names);
    rows = byKey(sets, keyCols, (into, row) => {
      // maxwait and maxwait_us together are one duration: keep the longer.
      if (num(row[wait]) * 1e6 + num(row[wait + 1]) > num(into[wait]) * 1e6 + num(into[wait + 1])) {
        into[wait] = row[wait]!;
        into[wait + 1] = row[wait + 1]!;
      }
      foldRow(into, row, rules);
    });
  } else {
    const rules = rulesFor(show, names);
    rows = byKey(sets, keyCols, (into, row) => foldRow(into, row, rules));
  }
  if (SORTED.has(show)) rows.sort((a, b) => compareKeys(a, b, keyCols));
  return { columns, rows };
}

/** Fold `row` into `into`. A mean is weighted by the counts it is a mean over, read before the
 * counts are summed, so means go first. */
function foldRow(into: Cell[], row: readonly Cell[], rules: readonly Rule[]): void {
  rules.forEach((r, i) => {
    if (typeof r !== 'object') return;
    const wa = num(into[r.mean]);
    const wb = num(row[r.mean]);
    into[i] = wa + wb > 0 ? Math.floor((num(into[i]) * wa + num(row[i]) * wb) / (wa + wb)) : 0;
  });
  rules.forEach((r, i) => {
    if (r === 'sum') into[i] = num(into[i]) + num(row[i]);
    else if (r === 'max') into[i] = Math.max(num(into[i]), num(row[i]));
  });
}

/** SHOW TOTALS: name/value rows; total_* and avg_* counts add up, avg_*_time are weighted means. */
function mergeTotals(sets: readonly ResultSet[], keyCols: number[]): Cell[][] {
  const weightOf: Readonly<Record<string, string>> = {
    avg_xact_time: 'avg_xact_count',
    avg_query_time: 'avg_query_count',
    avg_wait_time: 'avg_server_assignment_count',
  };
  const value = (rs: ResultSet, name: string): number => num(rs.rows.find((r) => r[0] === name)?.[1]);
  return byKey(sets, keyCols, (into) => void into).map((row) => {
    const name = String(row[0]);
    const w = weightOf[name];
    if (w === undefined) return [name, sets.reduce((s, rs) => s + value(rs, name), 0)];
    const weights = sets.map((rs) => value(rs, w));
    const total = weights.reduce((s, x) => s + x, 0);
    const mean = total > 0 ? sets.reduce((s, rs, i) => s + value(rs, name) * weights[i]!, 0) / total : 0;
    return [name, Math.floor(mean)];
  });
}

function compareKeys(a: readonly Cell[], b: readonly Cell[], keyCols: number[]): number {
  for (const k of keyCols) {
    const x = a[k];
    const y = b[k];
    if (typeof x === 'number' && typeof y === 'number') {
      if (x !== y) return x - y;
    } else if (String(x) !== String(y)) {
      return String(x) < String(y) ? -1 : 1;
    }
  }
  return 0;
}
