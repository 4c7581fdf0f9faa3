// Connection ids. Clients and servers draw from one counter, as PgBouncer's sockets do, so the id
// column of SHOW CLIENTS, SERVERS and SOCKETS orders every connection by when it was made, and a
// server made for a client right after it has the next id (tools and PgBouncer's tests rely on it).
// In a multi-worker instance each worker draws every `stride`-th id, so ids are unique across
// the instance (KILL_CLIENT names one) and say which worker has the connection.
let last = 0;
let stride = 1;
let offset = 0;

export function nextConnectionId(): number {
  return ++last * stride + offset;
}

/** Worker `index` (1-based) of `count`: ids k * count + index - 1, k = 1, 2, … */
export function stripeConnectionIds(index: number, count: number): void {
  stride = count;
  offset = index - 1;
}
