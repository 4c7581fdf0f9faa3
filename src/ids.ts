// Connection ids. Clients and servers draw from one counter, as PgBouncer's sockets do, so the id
// column of SHOW CLIENTS, SERVERS and SOCKETS orders every connection by when it was made, and a
// server made for a client right after it has the next id (tools and PgBouncer's tests rely on it).
let last = 0;

export function nextConnectionId(): number {
  return ++last;
}
