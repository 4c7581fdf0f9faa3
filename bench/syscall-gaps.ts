// Where a relay's time goes between the kernel's calls, per socket written to: for each write(2),
// how long user space ran since the read(2) that preceded it (the relay's own work on the
// critical path of a request or a reply), and how long from that write to the next epoll_pwait
// (the write itself, which on loopback runs the receiver's TCP input too, then whatever the relay
// does after it: the pool's hand-back). With one client these are the two directions of a
// transaction, told apart by the size of what they write.
//
//   perf record -e syscalls:sys_exit_read -e syscalls:sys_enter_write \
//     -e syscalls:sys_enter_epoll_pwait -e syscalls:sys_exit_epoll_pwait -t PID -o gaps.data -- sleep 4
//   node dist/bench/syscall-gaps.js gaps.data
//
// `-t PID` follows the main thread only (the event loop). perf prints times in microseconds, so a
// median is whole microseconds; the means are what to compare.

import { execFileSync } from 'node:child_process';
import { median } from './report.js';

interface Gaps {
  readToWrite: number[];
  writeToPoll: number[];
  sizes: Map<number, number>;
}

const EVENT = /^\s*([\d.]+):\s+syscalls:(\w+):\s*(.*)$/;

function gapsOf(script: string): Map<number, Gaps> {
  const byFd = new Map<number, Gaps>();
  let lastRead: number | null = null;
  let lastWrite: { at: number; gaps: Gaps } | null = null;
  for (const line of script.split('\n')) {
    const m = EVENT.exec(line);
    if (m === null) continue;
    const at = Number(m[1]) * 1e6;
    const event = m[2]!;
    const args = m[3]!;
    if (event === 'sys_exit_read') {
      // The return value, in hex; a read that returned nothing (EOF, or -EAGAIN after the data)
      // starts no work.
      if (BigInt.asIntN(64, BigInt(args.trim())) > 0n) lastRead = at;
    } else if (event === 'sys_enter_write') {
      const fd = parseInt(/fd: 0x([0-9a-f]+)/.exec(args)?.[1] ?? '-1', 16);
      const size = parseInt(/count: 0x([0-9a-f]+)/.exec(args)?.[1] ?? '0', 16);
      let gaps = byFd.get(fd);
      if (gaps === undefined) byFd.set(fd, (gaps = { readToWrite: [], writeToPoll: [], sizes: new Map() }));
      gaps.sizes.set(size, (gaps.sizes.get(size) ?? 0) + 1);
      if (lastRead !== null) gaps.readToWrite.push(at - lastRead);
      lastRead = null;
      lastWrite = { at, gaps };
    } else if (event === 'sys_enter_epoll_pwait' && lastWrite !== null) {
      lastWrite.gaps.writeToPoll.push(at - lastWrite.at);
      lastWrite = null;
    }
  }
  return byFd;
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: syscall-gaps PERF_DATA (recorded as in the header of bench/syscall-gaps.ts)\n');
  process.exit(2);
}
const script = execFileSync('perf', ['script', '-i', file, '-F', 'time,event,trace'], {
  encoding: 'utf8',
  maxBuffer: 1 << 30,
  stdio: ['ignore', 'pipe', 'ignore'],
});
const rows = [...gapsOf(script)].filter(([, g]) => g.readToWrite.length > 0).sort((a, b) => b[1].readToWrite.length - a[1].readToWrite.length);
for (const [fd, g] of rows) {
  const size = [...g.sizes].sort((a, b) => b[1] - a[1])[0]![0];
  process.stdout.write(
    `fd ${fd} (${g.readToWrite.length} writes, mostly ${size} bytes): read→write mean ${mean(g.readToWrite).toFixed(2)} µs, ` +
      `median ${median(g.readToWrite)}; write→epoll mean ${mean(g.writeToPoll).toFixed(2)} µs, median ${median(g.writeToPoll)}\n`,
  );
}
