// The cached clock. Every timeout is judged against `now`, refreshed once per janitor tick and
// once per socket read burst, so the hot path never asks the OS for the time per message.
//
// Date.now() allocates a 16-byte heap number on every call (the time is past V8's small-integer
// range): two or three per transaction, the relay's only allocation. With the native addon, a
// read asks its monotonic milliseconds instead (a small integer, no allocation) and `now` moves
// by the difference; the janitor puts it back on the wall clock once a tick (`sync`).

/** Milliseconds since the epoch, as of the last refresh. */
export let now = Date.now();

/** CLOCK_MONOTONIC in ms modulo 2^30 (the addon's monotonicMs), or null: Date.now() per refresh. */
let monotonic: (() => number) | null = null;
let lastTick = 0;
const TICK_MASK = 0x3fffffff;

/** Use the addon's clock from now on (app.ts, when the addon has it). */
export function useMonotonic(source: () => number): void {
  monotonic = source;
  sync();
}

export function refresh(): number {
  const m = monotonic;
  if (m === null) {
    // Stored only when it changed: each store of a new time boxes a number, and this runs per read.
    const t = Date.now();
    if (t !== now) now = t;
    return now;
  }
  const tick = m();
  if (tick !== lastTick) {
    // Masked: the source wraps every 2^30 ms (12 days), and the janitor refreshes every second.
    now += (tick - lastTick) & TICK_MASK;
    lastTick = tick;
  }
  return now;
}

/** The wall clock, once per janitor tick: `now` follows a wall-clock step as Date.now() would. */
export function sync(): number {
  now = Date.now();
  if (monotonic !== null) lastTick = monotonic();
  return now;
}
