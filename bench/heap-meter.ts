// Loaded into a Node target with `--import` (never by pgpool-ts itself): every 100 ms, writes to
// PGPOOL_HEAP_METER_FILE how many bytes the process has allocated on V8's heap since it started.
// V8 has no such counter in Node 20, so it is counted: the heap's growth since the start plus what
// every garbage collection freed (v8.GCProfiler reports the used heap before and after each). The
// bench reads it before and after a run and divides by the transactions: allocation per
// transaction, in the same run as the CPU figures. Buffer contents outside the heap (a Buffer's
// backing store) are not counted; the Buffer object itself is.
import fs from 'node:fs';
import v8 from 'node:v8';

interface GcRecord {
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

const file = process.env.PGPOOL_HEAP_METER_FILE;
if (file !== undefined && file !== '') {
  const profiler = new v8.GCProfiler();
  profiler.start();
  const usedAtStart = v8.getHeapStatistics().used_heap_size;
  let freed = 0;
  setInterval(() => {
    const report = profiler.stop() as unknown as { statistics: GcRecord[] };
    profiler.start();
    for (const gc of report.statistics) freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
    fs.writeFileSync(file, String(v8.getHeapStatistics().used_heap_size - usedAtStart + freed));
  }, 100).unref();
}
