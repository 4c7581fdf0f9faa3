/*
 * The connection storm's load client: `total` TLS + SCRAM-SHA-256 logins at `concurrency`, each
 * timed from connect() to its first ReadyForQuery, then Terminate. Prints one JSON line, the
 * LoadResult of bench/loadclient.ts.
 *
 * Why C: on a small machine the load client shares the cores with the pooler under test. The Node
 * load client spends 1.7-2.0 ms of CPU per TLS login (TLSSocket, streams, promises), two thirds of
 * the machine in a storm, so it set the pace for every pooler. This one does what libpq does per
 * connection (no TLS session resumption, certificates not checked, as `sslmode=require`) on
 * one epoll loop. The salted password is derived by the caller once (keys in hex), so a login
 * costs two HMACs here instead of 4096 PBKDF2 rounds, as in the Node client.
 *
 *   stormclient HOST PORT USER DATABASE CLIENT_KEY_HEX SERVER_KEY_HEX TOTAL CONCURRENCY TIMEOUT_MS
 *
 * Built by bench/run.ts with `cc -O2 ... -lssl -lcrypto`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
/* Linux retries a dropped SYN after 1 s: a connect that took this long met a full queue. */
#define SYN_RETRY_MS 1000.0

enum state { CONNECTING, SSL_ANSWER, HANDSHAKE, LOGIN, CLOSING };

struct conn {
  /* In flight (not yet logged in): a list in start order, for the timeout sweep. */
  struct conn *prev, *next;
  int linked;
  int fd;
  enum state st;
  SSL *ssl;
  double started;
  unsigned char buf[BUF];
  size_t len;
  char nonce[32];
  char first_bare[128];
  char auth_msg[1024];
};

static unsigned char client_key[32], server_key[32];
static const char *user, *database;
static struct sockaddr_in addr;
static SSL_CTX *ctx;
static int ep;
static struct conn *oldest, *newest;

static double *times;
static long ok, failed, started_n, total, syn_retried;
/* Failure kinds and their counts, in the order first seen. */
static char kinds[32][64];
static long kind_n[32];
static int nkinds;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void count_failure(const char *kind) {
  for (int i = 0; i < nkinds; i++)
    if (strcmp(kinds[i], kind) == 0) { kind_n[i]++; failed++; return; }
  if (nkinds < 32) {
    snprintf(kinds[nkinds], sizeof kinds[0], "%s", kind);
    kind_n[nkinds++] = 1;
  }
  failed++;
}

static int hexkey(const char *hex, unsigned char *out) {
  if (strlen(hex) != 64) return -1;
  for (int i = 0; i < 32; i++)
    if (sscanf(hex + 2 * i, "%2hhx", &out[i]) != 1) return -1;
  return 0;
}

static void unlink_conn(struct conn *c) {
  if (!c->linked) return;
  c->linked = 0;
  if (c->prev != NULL) c->prev->next = c->next; else oldest = c->next;
  if (c->next != NULL) c->next->prev = c->prev; else newest = c->prev;
}

static void drop(struct conn *c) {
  unlink_conn(c);
  if (c->ssl != NULL) SSL_free(c->ssl);
  close(c->fd);
  free(c);
}

static void fail(struct conn *c, const char *kind) {
  count_failure(kind);
  drop(c);
}

static int start_one(void);

/* A logged-in connection: Terminate, close_notify and FIN; it is closed when the server has
 * closed its side (as the Node client's end()), without counting against the concurrency. */
static void finish(struct conn *c) {
  static const unsigned char terminate[5] = {'X', 0, 0, 0, 4};
  times[ok++] = now_ms() - c->started;
  unlink_conn(c);
  SSL_write(c->ssl, terminate, 5);
  SSL_shutdown(c->ssl);
  shutdown(c->fd, SHUT_WR);
  c->st = CLOSING;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void want(struct conn *c, int err) {
  struct epoll_event ev = {.events = err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int send_all(struct conn *c, const void *data, int n) {
  /* Login messages are small: a nonblocking TLS write of one takes it whole or fails. */
  return SSL_write(c->ssl, data, n) == n ? 0 : -1;
}

static void put32(unsigned char *p, unsigned v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static unsigned get32(const unsigned char *p) {
  return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | p[3];
}

static int send_startup(struct conn *c) {
  unsigned char m[512];
  size_t n = 8;
  put32(m + 4, 196608);
  n += (size_t)snprintf((char *)m + n, sizeof m - n, "user%c%s%cdatabase%c%s%c", 0, user, 0, 0, database, 0);
  m[n++] = 0;
  put32(m, (unsigned)n);
  return send_all(c, m, (int)n);
}

static int send_client_first(struct conn *c) {
  unsigned char raw[18], m[256];
  RAND_bytes(raw, sizeof raw);
  EVP_EncodeBlock((unsigned char *)c->nonce, raw, sizeof raw);
  snprintf(c->first_bare, sizeof c->first_bare, "n=,r=%s", c->nonce);
  char first[160];
  int fl = snprintf(first, sizeof first, "n,,%s", c->first_bare);
  static const char mech[] = "SCRAM-SHA-256";
  size_t n = 5;
  memcpy(m + n, mech, sizeof mech);
  n += sizeof mech;
  put32(m + n, (unsigned)fl);
  n += 4;
  memcpy(m + n, first, (size_t)fl);
  n += (size_t)fl;
  m[0] = 'p';
  put32(m + 1, (unsigned)(n - 1));
  return send_all(c, m, (int)n);
}

/* server-first "r=...,s=...,i=..." -> client-final with the proof. */
static int send_client_final(struct conn *c, const unsigned char *body, size_t len) {
  char server_first[512];
  if (len >= sizeof server_first) return -1;
  memcpy(server_first, body, len);
  server_first[len] = 0;
  if (strncmp(server_first, "r=", 2) != 0 || strncmp(server_first + 2, c->nonce, strlen(c->nonce)) != 0) return -1;
  const char *comma = strchr(server_first, ',');
  if (comma == NULL) return -1;
  char without_proof[256];
  snprintf(without_proof, sizeof without_proof, "c=biws,r=%.*s", (int)(comma - server_first - 2), server_first + 2);
  snprintf(c->auth_msg, sizeof c->auth_msg, "%s,%s,%s", c->first_bare, server_first, without_proof);
  unsigned char stored[32], sig[32], proof[32];
  unsigned sl = 32;
  SHA256(client_key, 32, stored);
  HMAC(EVP_sha256(), stored, 32, (unsigned char *)c->auth_msg, strlen(c->auth_msg), sig, &sl);
  for (int i = 0; i < 32; i++) proof[i] = client_key[i] ^ sig[i];
  char proof64[64];
  EVP_EncodeBlock((unsigned char *)proof64, proof, 32);
  unsigned char m[512];
  int n = snprintf((char *)m + 5, sizeof m - 5, "%s,p=%s", without_proof, proof64);
  m[0] = 'p';
  put32(m + 1, (unsigned)n + 4);
  return send_all(c, m, n + 5);
}

/* server-final "v=<base64 ServerSignature>". */
static int check_server_final(struct conn *c, const unsigned char *body, size_t len) {
  unsigned char sig[32];
  unsigned sl = 32;
  char expect[64];
  HMAC(EVP_sha256(), server_key, 32, (unsigned char *)c->auth_msg, strlen(c->auth_msg), sig, &sl);
  int el = EVP_EncodeBlock((unsigned char *)expect, sig, 32);
  return len == (size_t)el + 2 && memcmp(body, "v=", 2) == 0 && memcmp(body + 2, expect, (size_t)el) == 0 ? 0 : -1;
}

/* The login's messages in the buffer; returns 1 when the connection is done with (finished or
 * failed), 0 to wait for more. */
static int on_messages(struct conn *c) {
  size_t off = 0;
  while (c->len - off >= 5) {
    unsigned char type = c->buf[off];
    size_t mlen = get32(c->buf + off + 1);
    if (mlen < 4 || mlen + 1 > BUF) { fail(c, "bad message"); return 1; }
    if (c->len - off < mlen + 1) break;
    const unsigned char *body = c->buf + off + 5;
    size_t blen = mlen - 4;
    off += mlen + 1;
    if (type == 'Z') { finish(c); return 1; }
    if (type == 'E') {
      char kind[16] = "ErrorResponse";
      for (size_t i = 0; i < blen && body[i] != 0; i += strlen((const char *)body + i) + 1)
        if (body[i] == 'C') snprintf(kind, sizeof kind, "%s", (const char *)body + i + 1);
      fail(c, kind);
      return 1;
    }
    if (type != 'R' || blen < 4) continue;
    unsigned code = get32(body);
    int r = 0;
    if (code == 10) r = send_client_first(c);
    else if (code == 11) r = send_client_final(c, body + 4, blen - 4);
    else if (code == 12) r = check_server_final(c, body + 4, blen - 4);
    else if (code != 0) r = -1;
    if (r != 0) { fail(c, "auth"); return 1; }
  }
  memmove(c->buf, c->buf + off, c->len - off);
  c->len -= off;
  return 0;
}

static void tls_failure(struct conn *c) {
  char kind[64];
  unsigned long e = ERR_get_error();
  snprintf(kind, sizeof kind, "tls: %s", e == 0 ? (errno != 0 ? strerrorname_np(errno) : "closed") : ERR_reason_error_string(e));
  ERR_clear_error();
  fail(c, kind);
}

static void on_event(struct conn *c) {
  if (c->st == CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) { fail(c, strerrorname_np(err)); start_one(); return; }
    if (now_ms() - c->started >= SYN_RETRY_MS) syn_retried++;
    static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    if (write(c->fd, ssl_request, 8) != 8) { fail(c, strerrorname_np(errno)); start_one(); return; }
    c->st = SSL_ANSWER;
    want(c, SSL_ERROR_WANT_READ);
    return;
  }
  if (c->st == CLOSING) {
    char sink[4096];
    ssize_t n = read(c->fd, sink, sizeof sink);
    if (n > 0 || (n < 0 && errno == EAGAIN)) return;
    drop(c);
    return;
  }
  if (c->st == SSL_ANSWER) {
    char answer;
    ssize_t n = read(c->fd, &answer, 1);
    if (n < 0 && errno == EAGAIN) return;
    if (n != 1 || answer != 'S') { fail(c, n == 1 ? "no TLS" : n == 0 ? "closed by peer" : strerrorname_np(errno)); start_one(); return; }
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    c->st = HANDSHAKE;
  }
  if (c->st == HANDSHAKE) {
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) { want(c, e); return; }
      tls_failure(c);
      start_one();
      return;
    }
    if (send_startup(c) != 0) { tls_failure(c); start_one(); return; }
    c->st = LOGIN;
    want(c, SSL_ERROR_WANT_READ);
  }
  for (;;) {
    int n = SSL_read(c->ssl, c->buf + c->len, (int)(BUF - c->len));
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      if (e == SSL_ERROR_ZERO_RETURN) fail(c, "closed by peer");
      else tls_failure(c);
      start_one();
      return;
    }
    c->len += (size_t)n;
    if (on_messages(c)) { start_one(); return; }
  }
}

/* Start the next connection, if any are left; 0 when one was started. */
static int start_one(void) {
  while (started_n < total) {
    started_n++;
    struct conn *c = calloc(1, sizeof *c);
    c->started = now_ms();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
      fail(c, strerrorname_np(errno));
      continue;
    }
    c->st = CONNECTING;
    c->linked = 1;
    c->prev = newest;
    if (newest != NULL) newest->next = c; else oldest = c;
    newest = c;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
  }
  return -1;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void print_ms(const char *name, long i) {
  if (ok == 0) printf("\"%s\":null,", name);
  else printf("\"%s\":%.3f,", name, times[i < ok ? i : ok - 1]);
}

int main(int argc, char **argv) {
  if (argc != 10 || hexkey(argv[5], client_key) != 0 || hexkey(argv[6], server_key) != 0) {
    fprintf(stderr, "usage: stormclient HOST PORT USER DATABASE CLIENT_KEY_HEX SERVER_KEY_HEX TOTAL CONCURRENCY TIMEOUT_MS\n");
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) { fprintf(stderr, "stormclient: %s is not an IPv4 address\n", argv[1]); return 2; }
  user = argv[3];
  database = argv[4];
  total = atol(argv[7]);
  long concurrency = atol(argv[8]);
  double timeout_ms = atof(argv[9]);
  times = calloc((size_t)total + 1, sizeof *times);
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
  ep = epoll_create1(0);

  double t0 = now_ms();
  for (long i = 0; i < concurrency; i++) start_one();
  struct epoll_event evs[256];
  while (ok + failed < total) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr);
    /* Every connection has the same limit: the oldest in flight is the first to time out. */
    double t = now_ms();
    while (oldest != NULL && t - oldest->started >= timeout_ms) {
      fail(oldest, "timeout");
      start_one();
    }
  }
  double elapsed = (now_ms() - t0) / 1e3;

  qsort(times, (size_t)ok, sizeof *times, cmp);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  printf("{\"ok\":%ld,\"failed\":%ld,\"failures\":{", ok, failed);
  for (int i = 0; i < nkinds; i++) printf("%s\"%s\":%ld", i == 0 ? "" : ",", kinds[i], kind_n[i]);
  printf("},\"elapsedS\":%.3f,", elapsed);
  print_ms("p50Ms", (long)(0.5 * ok));
  print_ms("p99Ms", (long)(0.99 * ok));
  print_ms("maxMs", ok - 1);
  printf("\"rssBeforeKiB\":null,\"rssAfterKiB\":null,\"synRetried\":%ld,\"clientCpuMs\":%.0f}\n", syn_retried, cpu);
  return 0;
}
