// The cached clock. Every timeout is judged against `now`, refreshed once per janitor tick and
// once per socket read burst, so the hot path never asks the OS for the time per message.

/** Milliseconds since the epoch, as of the last refresh. */
export let now = Date.now();

export function refresh(): number {
  // Stored only when it changed: each store of a new time boxes a number, and this runs per read.
  const t = Date.now();
  if (t !== now) now = t;
  return now;
}
