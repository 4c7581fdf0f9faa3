// Loaded into a Node target with `--import` (never by pgpool-ts itself): when asked (the bench
// writes a sequence number to PGPOOL_HEAP_METER_FILE + '.ask'), writes to PGPOOL_HEAP_METER_FILE
// that number and how many bytes the process has allocated on V8's heap since it started. V8 has
// no such counter in Node 20, so it is counted: the heap's growth since the start plus what every
// garbage collection freed (v8.GCProfiler reports the used heap before and after each). The bench
// asks before and after a run and divides by the transactions: allocation per transaction, in the
// same run as the CPU figures. It costs nothing between questions (a file watch; a timer writing
// the file ten times a second cost a few per cent of a pooler's CPU). Buffer contents outside the
// heap (a Buffer's backing store) are not counted; the Buffer object itself is.
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

interface GcRecord {
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

const file = process.env.PGPOOL_HEAP_METER_FILE;
if (file !== undefined && file !== '') {
  const ask = `${path.basename(file)}.ask`;
  const profiler = new v8.GCProfiler();
  profiler.start();
  const usedAtStart = v8.getHeapStatistics().used_heap_size;
  let freed = 0;
  const answer = () => {
    let seq: string;
    try {
      seq = fs.readFileSync(`${file}.ask`, 'utf8');
    } catch {
      return;
    }
    const report = profiler.stop() as unknown as { statistics: GcRecord[] };
    profiler.start();
    for (const gc of report.statistics) freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
    fs.writeFileSync(file, `${seq} ${v8.getHeapStatistics().used_heap_size - usedAtStart + freed}`);
  };
  fs.watch(path.dirname(file), { persistent: false }, (_event, name) => {
    if (name === ask) answer();
  });
}
