/*
 * peercred: the credentials of the process at the other end of a unix-domain socket.
 *
 * Node's net module cannot read them, and they are what PostgreSQL's `peer` method and
 * PgBouncer's password-less console login for the pooler's own OS user rest on. One function,
 * peercred(fd) -> { pid, uid, gid }, over getsockopt(SO_PEERCRED) (Linux) or getpeereid() (the
 * BSDs and macOS, where there is no pid: it is -1). The kernel records the credentials at
 * connect(), so they describe the connecting process, not whoever holds the socket later.
 *
 * And trim() -> boolean, glibc's malloc_trim(0): OpenSSL's per-connection allocations leave
 * glibc's heap so fragmented that memory freed by thousands of closed TLS connections is never
 * returned to the system (a bare Node TLS server measured 48 MB → 734 MB of RSS after four
 * rounds of 10 000 connections opened and closed, 100 MB after one malloc_trim). The pooler's
 * janitor calls it after many connections closed. Elsewhere than glibc it does nothing.
 *
 * And tcpBind(address, port, reusePort) -> fd: a TCP socket bound (not yet listening) with
 * SO_REUSEADDR, as libuv binds, and SO_REUSEPORT when asked, which Node 20's net cannot set: it must
 * be set before bind(), and net creates and binds the socket in one call. The caller hands the
 * descriptor to server.listen({ fd }), which listens and owns it from then on. `address` is a
 * numeric IPv4 or IPv6 address; '::' is bound dual-stack (IPV6_V6ONLY off), as Node binds it.
 *
 * And tcpTune(fd, keepalive, keepidle, keepintvl, keepcnt, userTimeout): PgBouncer's tune_socket
 * on a connected TCP socket, both towards clients and towards PostgreSQL: SO_KEEPALIVE and, when
 * keepalive is on and each is non-zero, TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT (seconds,
 * probes); TCP_USER_TIMEOUT (ms) when non-zero. Node sets only SO_KEEPALIVE and TCP_KEEPIDLE. An
 * option this system does not know is an error naming it.
 *
 * The socket buffers (tcp_socket_buffer) are not among them: a receive buffer shrunk on an open
 * connection below the window already offered stalls it (Linux then drops what it advertised room
 * for; 8 MB took minutes at 4096 bytes). They are set before the handshake instead: by
 * listenTune(fd, deferAccept, socketBuffer) on a listening socket, whose accepted sockets inherit
 * them (with TCP_DEFER_ACCEPT, 1 second when on as PgBouncer sets it, so accept() wakes the
 * pooler only once the client has sent its first bytes), and by tcpSocket(ipv6, socketBuffer) ->
 * fd, a socket not yet connected for a server connection, which net.Socket({ fd }) then connects.
 *
 * And dgramConnect(path) -> fd and dgramSend(fd, buffer) -> boolean: a unix-domain datagram
 * socket connected to `path` (the syslog socket, /dev/log), which Node's dgram cannot open, and one
 * datagram sent on it without blocking (false: the reader's queue is full and it was dropped; any
 * other failure throws, so the caller reconnects).
 *
 * And monotonicMs() -> integer: CLOCK_MONOTONIC in milliseconds, modulo 2^30 so that it is always
 * a small integer to V8. The relay reads the time on every socket read, and Date.now() allocates
 * a 16-byte heap number per call (its value is past the small-integer range); this does not.
 * src/clock.ts accumulates the differences, so the wrap every 12 days does not matter.
 *
 * And acceptStart(fd, backlog, maxQueue, onAccept) -> { handle, realtime } and acceptStop(handle):
 * listen() on a socket from tcpBind, and a thread of its own that takes each connection off the
 * kernel's queue as it arrives (accept4) and queues its descriptor for onAccept(fd) on the event
 * loop. Node accepts only when its loop turns, and a loop busy with TLS handshakes turns seldom: in
 * a connection storm the kernel's queue (listen_backlog) fills within a millisecond and every SYN
 * beyond it is dropped, to be retried by the client a whole second later (then 3, 7 s). The thread
 * keeps that queue empty. At most maxQueue descriptors wait for the loop; beyond that the thread
 * waits (10 ms at a time) and the kernel's queue fills as before. An accept() failure (out of
 * descriptors) is passed on as onAccept(-errno) and the thread waits a second before it retries, as
 * PgBouncer does. acceptStop wakes the thread through an eventfd; the thread takes what is still
 * arriving for a few milliseconds (accept_settle says why) and closes the listening socket;
 * acceptStop joins it and returns the descriptors accepted but not yet handed on: those clients
 * finished their TCP handshake before the close, and Node's server would have handed them on.
 * The thread runs at real-time priority (SCHED_FIFO 1) where the process may ask for it (root,
 * CAP_SYS_NICE, or an RLIMIT_RTPRIO), and acceptStart says whether it does. At normal priority a
 * woken thread waits for the running one's time slice: a burst of 500 connects from one client,
 * which complete in the client's own system calls microseconds apart, overflowed a 16-slot queue
 * by 225-378 connections in 2 000 on this machine (2 cores, Linux 6.18; nice -10 and a 100 us
 * EEVDF slice did no better), each retried a second later. At real-time priority the thread
 * preempts at once and none overflowed. It spends microseconds per connection and sleeps when
 * the loop's queue is full, so it cannot keep a core from the loop. Such a thread wants no
 * TCP_DEFER_ACCEPT (the caller leaves it off): a deferred connection waits in the SYN queue, which
 * is as short as the backlog, and with it the same burst still lost 225 of its first 500 SYNs.
 * Linux only (eventfd, accept4); the addon does not export the two elsewhere, and the pooler
 * listens through Node.
 *
 * This is the pooler's one native addon: socket options that Node does not expose belong here
 * too, one small function each.
 *
 * N-API only (no node-addon-api, no C++): the addon builds with the C compiler and the headers
 * node ships, and one build serves every Node version with the same N-API level.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#endif
#include <node_api.h>

/* The errno names Node gives the same failures (err.code), for those a caller may test. */
static const char *errno_name(int err)
{
	switch (err) {
	case EADDRINUSE: return "EADDRINUSE";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case EACCES: return "EACCES";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EINVAL: return "EINVAL";
	case ENOPROTOOPT: return "ENOPROTOOPT";
	default: return NULL;
	}
}

static napi_value throw_errno(napi_env env, const char *what, int err)
{
	char msg[320];
	char code[32];
	const char *name = errno_name(err);
	if (name != NULL)
		snprintf(code, sizeof(code), "%s", name);
	else
		snprintf(code, sizeof(code), "E%d", err);
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(err));
	napi_throw_error(env, code, msg);
	return NULL;
}

static napi_value set_int(napi_env env, napi_value obj, const char *name, double v)
{
	napi_value n;
	if (napi_create_double(env, v, &n) != napi_ok || napi_set_named_property(env, obj, name, n) != napi_ok)
		return NULL;
	return obj;
}

static napi_value peercred(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	int32_t fd;
	double pid, uid, gid;
	napi_value out;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
		napi_throw_type_error(env, NULL, "peercred(fd): fd must be a non-negative integer");
		return NULL;
	}

#if defined(SO_PEERCRED)
	{
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
			return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
		if (len != sizeof(cred))
			return throw_errno(env, "getsockopt(SO_PEERCRED) returned a short structure", EINVAL);
		pid = cred.pid;
		uid = cred.uid;
		gid = cred.gid;
	}
#else
	{
		uid_t u;
		gid_t g;
		if (getpeereid(fd, &u, &g) != 0)
			return throw_errno(env, "getpeereid", errno);
		pid = -1;
		uid = u;
		gid = g;
	}
#endif

	if (napi_create_object(env, &out) != napi_ok)
		return NULL;
	if (set_int(env, out, "pid", pid) == NULL || set_int(env, out, "uid", uid) == NULL || set_int(env, out, "gid", gid) == NULL)
		return NULL;
	return out;
}

static napi_value trim(napi_env env, napi_callback_info info)
{
	int released = 0;
	napi_value out;

	(void)info;
#ifdef __GLIBC__
	released = malloc_trim(0);
#endif
	if (napi_get_boolean(env, released != 0, &out) != napi_ok)
		return NULL;
	return out;
}

static napi_value monotonic_ms(napi_env env, napi_callback_info info)
{
	struct timespec ts;
	napi_value out;

	(void)info;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (napi_create_int32(env, (int32_t)(((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000) & 0x3fffffff), &out) != napi_ok)
		return NULL;
	return out;
}

static napi_value tcp_bind(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3];
	char address[INET6_ADDRSTRLEN + 1];
	size_t len;
	int32_t port;
	bool reuse_port;
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd, on = 1, off = 0;
	char what[INET6_ADDRSTRLEN + 64];
	napi_value out;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 3 || napi_get_value_string_utf8(env, argv[0], address, sizeof(address), &len) != napi_ok ||
	    napi_get_value_int32(env, argv[1], &port) != napi_ok || port < 0 || port > 65535 ||
	    napi_get_value_bool(env, argv[2], &reuse_port) != napi_ok) {
		napi_throw_type_error(env, NULL, "tcpBind(address, port, reusePort): a numeric address, a port 0..65535 and a boolean");
		return NULL;
	}

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET6, address, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
		sa->sin6_family = AF_INET6;
		sa->sin6_port = htons((uint16_t)port);
		sslen = sizeof(*sa);
	} else if (inet_pton(AF_INET, address, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
		sa->sin_family = AF_INET;
		sa->sin_port = htons((uint16_t)port);
		sslen = sizeof(*sa);
	} else {
		napi_throw_type_error(env, NULL, "tcpBind: the address must be a numeric IPv4 or IPv6 address");
		return NULL;
	}

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return throw_errno(env, "socket", errno);
	snprintf(what, sizeof(what), "bind %s:%d", address, port);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0)
		goto fail;
	if (reuse_port) {
#if defined(SO_REUSEPORT_LB)
		/* FreeBSD: SO_REUSEPORT alone does not spread connections, _LB does. */
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT_LB, &on, sizeof(on)) != 0)
			goto fail;
#elif defined(SO_REUSEPORT)
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
			goto fail;
#else
		close(fd);
		return throw_errno(env, "SO_REUSEPORT", ENOPROTOOPT);
#endif
	}
	if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ss)->sin6_addr) &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&ss, sslen) != 0)
		goto fail;
	if (napi_create_int32(env, fd, &out) != napi_ok) {
		close(fd);
		return NULL;
	}
	return out;
fail:
	{
		int err = errno;
		close(fd);
		return throw_errno(env, what, err);
	}
}

static int set_opt(int fd, int level, int name, int32_t value)
{
	int v = value;
	return setsockopt(fd, level, name, &v, sizeof(v));
}

/* SO_SNDBUF and SO_RCVBUF, when buffer is non-zero; 0 or -1 (errno set), as setsockopt. */
static int set_buffers(int fd, int32_t buffer)
{
	if (buffer <= 0)
		return 0;
	if (set_opt(fd, SOL_SOCKET, SO_SNDBUF, buffer) != 0)
		return -1;
	return set_opt(fd, SOL_SOCKET, SO_RCVBUF, buffer);
}

static napi_value tcp_tune(napi_env env, napi_callback_info info)
{
	size_t argc = 6;
	napi_value argv[6];
	int32_t fd, idle, intvl, cnt, user_timeout;
	bool keepalive;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 6 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
	    napi_get_value_bool(env, argv[1], &keepalive) != napi_ok ||
	    napi_get_value_int32(env, argv[2], &idle) != napi_ok || idle < 0 ||
	    napi_get_value_int32(env, argv[3], &intvl) != napi_ok || intvl < 0 ||
	    napi_get_value_int32(env, argv[4], &cnt) != napi_ok || cnt < 0 ||
	    napi_get_value_int32(env, argv[5], &user_timeout) != napi_ok || user_timeout < 0) {
		napi_throw_type_error(env, NULL, "tcpTune(fd, keepalive, keepidle, keepintvl, keepcnt, userTimeout): an fd, a boolean and four integers >= 0");
		return NULL;
	}
	if (set_opt(fd, SOL_SOCKET, SO_KEEPALIVE, keepalive ? 1 : 0) != 0)
		return throw_errno(env, "setsockopt(SO_KEEPALIVE)", errno);
	if (keepalive) {
#ifdef TCP_KEEPIDLE
		if (idle > 0 && set_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle) != 0)
			return throw_errno(env, "setsockopt(TCP_KEEPIDLE)", errno);
#elif defined(TCP_KEEPALIVE)
		if (idle > 0 && set_opt(fd, IPPROTO_TCP, TCP_KEEPALIVE, idle) != 0)
			return throw_errno(env, "setsockopt(TCP_KEEPALIVE)", errno);
#endif
#ifdef TCP_KEEPINTVL
		if (intvl > 0 && set_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL, intvl) != 0)
			return throw_errno(env, "setsockopt(TCP_KEEPINTVL)", errno);
#else
		if (intvl > 0)
			return throw_errno(env, "TCP_KEEPINTVL", ENOPROTOOPT);
#endif
#ifdef TCP_KEEPCNT
		if (cnt > 0 && set_opt(fd, IPPROTO_TCP, TCP_KEEPCNT, cnt) != 0)
			return throw_errno(env, "setsockopt(TCP_KEEPCNT)", errno);
#else
		if (cnt > 0)
			return throw_errno(env, "TCP_KEEPCNT", ENOPROTOOPT);
#endif
	}
	if (user_timeout > 0) {
#ifdef TCP_USER_TIMEOUT
		if (set_opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, user_timeout) != 0)
			return throw_errno(env, "setsockopt(TCP_USER_TIMEOUT)", errno);
#else
		return throw_errno(env, "TCP_USER_TIMEOUT", ENOPROTOOPT);
#endif
	}
	return NULL;
}

static napi_value listen_tune(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3];
	int32_t fd, buffer;
	bool defer;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || napi_get_value_bool(env, argv[1], &defer) != napi_ok ||
	    napi_get_value_int32(env, argv[2], &buffer) != napi_ok || buffer < 0) {
		napi_throw_type_error(env, NULL, "listenTune(fd, deferAccept, socketBuffer): an fd, a boolean and an integer >= 0");
		return NULL;
	}
#ifdef TCP_DEFER_ACCEPT
	if (set_opt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, defer ? 1 : 0) != 0)
		return throw_errno(env, "setsockopt(TCP_DEFER_ACCEPT)", errno);
#else
	if (defer)
		return throw_errno(env, "TCP_DEFER_ACCEPT", ENOPROTOOPT);
#endif
	if (set_buffers(fd, buffer) != 0)
		return throw_errno(env, "setsockopt(SO_SNDBUF/SO_RCVBUF)", errno);
	return NULL;
}

static napi_value tcp_socket(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	bool ipv6;
	int32_t buffer;
	int fd;
	napi_value out;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 2 || napi_get_value_bool(env, argv[0], &ipv6) != napi_ok || napi_get_value_int32(env, argv[1], &buffer) != napi_ok ||
	    buffer < 0) {
		napi_throw_type_error(env, NULL, "tcpSocket(ipv6, socketBuffer): a boolean and an integer >= 0");
		return NULL;
	}
	fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return throw_errno(env, "socket", errno);
	if (set_buffers(fd, buffer) != 0) {
		int err = errno;
		close(fd);
		return throw_errno(env, "setsockopt(SO_SNDBUF/SO_RCVBUF)", err);
	}
	if (napi_create_int32(env, fd, &out) != napi_ok) {
		close(fd);
		return NULL;
	}
	return out;
}

static napi_value dgram_connect(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct sockaddr_un sa;
	size_t len;
	int fd;
	char what[sizeof(sa.sun_path) + 32];
	napi_value out;

	memset(&sa, 0, sizeof(sa));
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 1 || napi_get_value_string_utf8(env, argv[0], sa.sun_path, sizeof(sa.sun_path), &len) != napi_ok ||
	    len == 0 || len >= sizeof(sa.sun_path) - 1) {
		napi_throw_type_error(env, NULL, "dgramConnect(path): a unix socket path shorter than sun_path");
		return NULL;
	}
	sa.sun_family = AF_UNIX;
	snprintf(what, sizeof(what), "connect %s", sa.sun_path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int err = errno;
		close(fd);
		return throw_errno(env, what, err);
	}
	if (napi_create_int32(env, fd, &out) != napi_ok) {
		close(fd);
		return NULL;
	}
	return out;
}

static napi_value dgram_send(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	int32_t fd;
	void *data;
	size_t len;
	bool sent;
	napi_value out;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
	    napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
		napi_throw_type_error(env, NULL, "dgramSend(fd, buffer): an fd and a Buffer");
		return NULL;
	}
	sent = send(fd, data, len, MSG_NOSIGNAL) >= 0;
	if (!sent && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
		return throw_errno(env, "send", errno);
	if (napi_get_boolean(env, sent, &out) != napi_ok)
		return NULL;
	return out;
}

#ifdef __linux__
struct acceptor {
	int fd;    /* the listening socket */
	int wake;  /* eventfd: acceptStop writes it, the thread returns */
	pthread_t thread;
	napi_threadsafe_function tsfn;  /* wakes the loop; carries no data */
	napi_ref on_accept;
	pthread_mutex_t lock;           /* guards the fields below */
	int *queue;                     /* accepted descriptors (or -errno) for the loop, a ring */
	int head, count, cap;
	bool wake_pending;              /* a wake-up is on its way to the loop */
	bool stopped;
	bool closed;  /* the thread closed fd (set before it ends; read after the join) */
	bool realtime;  /* the thread runs at SCHED_FIFO */
	int owners;  /* the JS handle and the thread-safe function, each freeing on its finalizer */
};

/* The real-time thread and the event loop share the queue's lock. Should the loop be preempted
 * while it holds the lock (by any normal-priority task: the load itself, in a storm), the thread
 * would wait behind it for a time slice, its kernel queue filling; with priority inheritance the
 * holder runs at the thread's priority until it lets go. */
static void accept_lock_init(pthread_mutex_t *lock)
{
	pthread_mutexattr_t attr;

	if (pthread_mutexattr_init(&attr) == 0 && pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT) == 0 &&
	    pthread_mutex_init(lock, &attr) == 0) {
		pthread_mutexattr_destroy(&attr);
		return;
	}
	pthread_mutex_init(lock, NULL);
}

/* Take the oldest queued value; false when there is none. */
static bool accept_pop(struct acceptor *a, int *value)
{
	bool got;

	pthread_mutex_lock(&a->lock);
	got = a->count > 0;
	if (got) {
		*value = a->queue[a->head];
		a->head = (a->head + 1) % a->cap;
		a->count--;
	} else {
		a->wake_pending = false;
	}
	pthread_mutex_unlock(&a->lock);
	return got;
}

/* Hand one value to onAccept. A descriptor is the callee's from here, even if it throws. */
static void accept_hand(napi_env env, napi_value on_accept, int value)
{
	napi_value arg, undefined;

	if (napi_create_int32(env, value, &arg) != napi_ok || napi_get_undefined(env, &undefined) != napi_ok) {
		if (value >= 0)
			close(value);
		return;
	}
	napi_call_function(env, undefined, on_accept, 1, &arg, NULL);
}

/* On the event loop, once per wake-up: everything queued goes to onAccept, oldest first. */
static void accept_call_js(napi_env env, napi_value js_cb, void *context, void *data)
{
	struct acceptor *a = context;
	napi_value on_accept;
	int value;

	(void)js_cb;
	(void)data;
	if (env == NULL || napi_get_reference_value(env, a->on_accept, &on_accept) != napi_ok)
		return;
	while (accept_pop(a, &value)) {
		accept_hand(env, on_accept, value);
		bool pending;
		napi_is_exception_pending(env, &pending);
		if (pending)
			return; /* Node reports it; the rest waits for the next wake-up */
	}
}

/* Wait up to ms for acceptStop; true when it came. */
static bool accept_wait_stop(struct acceptor *a, int ms)
{
	struct pollfd p = { .fd = a->wake, .events = POLLIN };
	return poll(&p, 1, ms) > 0;
}

/* Queue one value for the loop, waiting while the queue is full; false once stopping. */
static bool accept_deliver(struct acceptor *a, int value)
{
	for (;;) {
		bool queued, wake = false;
		pthread_mutex_lock(&a->lock);
		queued = a->count < a->cap;
		if (queued) {
			a->queue[(a->head + a->count) % a->cap] = value;
			a->count++;
			wake = !a->wake_pending;
			a->wake_pending = true;
		}
		pthread_mutex_unlock(&a->lock);
		if (wake)
			napi_call_threadsafe_function(a->tsfn, NULL, napi_tsfn_nonblocking);
		if (queued)
			return true;
		if (accept_wait_stop(a, 10))
			return false;
	}
}

/* Take every connection the kernel has queued: 0 once its queue is empty, -1 once the thread
 * must end (acceptStop came while the loop's queue was full or accept() was failing). */
static int accept_all(struct acceptor *a)
{
	for (;;) {
		int c = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c >= 0) {
			if (!accept_deliver(a, c)) {
				close(c);
				return -1;
			}
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return !accept_deliver(a, -errno) || accept_wait_stop(a, 1000) ? -1 : 0;
	}
}

static long long accept_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How long acceptStop keeps taking connections: until none came for QUIET ms, SETTLE ms at most. */
#define ACCEPT_QUIET_MS 2
#define ACCEPT_SETTLE_MS 20

/*
 * acceptStop's last look. The kernel queues connections for this socket until it is closed, and
 * the close resets every one still queued, and (TCP_DEFER_ACCEPT) every one that finished its
 * handshake but has not sent its first byte yet; Linux moves them to another socket of a shared
 * port only under net.ipv4.tcp_migrate_req = 1. In a rolling restart under pgbench -C that lost a
 * connection in about one restart of five. So: stop deferring (a waiting connection completes with
 * its first byte), take what comes until the queue has been quiet for a moment, shrink the queue
 * to one and close right after the last empty look. What can be lost now is one connection that
 * arrives in that microsecond, and a client that connected but sends nothing for longer than the
 * wait.
 */
static void accept_settle(struct acceptor *a)
{
	struct pollfd p = { .fd = a->fd, .events = POLLIN };
	long long deadline = accept_now_ms() + ACCEPT_SETTLE_MS;
	int off = 0;

	setsockopt(a->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &off, sizeof(off));
	while (accept_all(a) == 0) {
		long long left = deadline - accept_now_ms();
		if (left <= 0 || poll(&p, 1, left < ACCEPT_QUIET_MS ? (int)left : ACCEPT_QUIET_MS) == 0)
			break;
	}
	/* With a backlog of 0 the kernel queues one connection at most and drops further SYNs (their
	 * clients retry a second later and reach another process of the port, or a refusal): should
	 * the thread lose its core between the last look and the close, one connection is reset at
	 * most, not every one that arrived meanwhile. */
	listen(a->fd, 0);
	accept_all(a);
	close(a->fd);
	a->closed = true;
}

static void *accept_thread(void *arg)
{
	struct acceptor *a = arg;
	struct pollfd p[2] = { { .fd = a->fd, .events = POLLIN }, { .fd = a->wake, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (p[1].revents != 0 || accept_all(a) < 0)
			break;
	}
	accept_settle(a);
	return NULL;
}

/* Start the thread at real-time priority where the process may, else at its own (the header says
 * why). 0 or an errno. */
static int accept_spawn(struct acceptor *a)
{
	struct sched_param sp = { .sched_priority = 1 };
	pthread_attr_t attr;
	int err = pthread_attr_init(&attr);

	if (err == 0) {
		if (pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED) == 0 &&
		    pthread_attr_setschedpolicy(&attr, SCHED_FIFO) == 0 && pthread_attr_setschedparam(&attr, &sp) == 0)
			err = pthread_create(&a->thread, &attr, accept_thread, a);
		else
			err = EINVAL;
		pthread_attr_destroy(&attr);
	}
	a->realtime = err == 0;
	if (!a->realtime)
		err = pthread_create(&a->thread, NULL, accept_thread, a);
	/* Its name in top -H and /proc/PID/task (the tests find it there to read its priority), set
	 * here and not by the thread: at normal priority on a busy machine the thread may not have run
	 * yet when acceptStart returns and the port already answers (CI saw no such thread). */
	if (err == 0)
		pthread_setname_np(a->thread, "pgpool-accept");
	return err;
}

static void accept_free(struct acceptor *a)
{
	pthread_mutex_destroy(&a->lock);
	free(a->queue);
	free(a);
}

/* Both finalizers run on the loop thread: whichever comes last frees. */
static void accept_release(struct acceptor *a)
{
	if (--a->owners == 0)
		accept_free(a);
}

static void accept_finalize(napi_env env, void *data, void *hint)
{
	struct acceptor *a = data;

	(void)hint;
	napi_delete_reference(env, a->on_accept);
	close(a->wake);
	accept_release(a);
}

static void accept_handle_finalize(napi_env env, void *data, void *hint)
{
	(void)env;
	(void)hint;
	accept_release(data);
}

/*
 * Make the process's descriptor table big enough for `want` descriptors now, while nothing waits.
 * The kernel grows it by doubling when a new descriptor does not fit, and in a process with
 * threads each growth waits for an RCU grace period (expand_fdtable's synchronize_rcu): measured
 * 12 ms in the first second of a storm, in accept4 on the accept thread, while 200 connections
 * found its 16-slot queue full and waited a second for their SYN to be sent again. The table never
 * shrinks, so one descriptor at `want` (closed at once) grows it for good; capped by RLIMIT_NOFILE.
 */
static void grow_fd_table(int fd, int want)
{
	struct rlimit rl;
	int high;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)want >= rl.rlim_cur)
		want = rl.rlim_cur > 0 ? (int)(rl.rlim_cur - 1) : 0;
	if (want <= fd)
		return;
	/* F_DUPFD takes the lowest free descriptor at or above `want`: nothing open is touched. */
	high = fcntl(fd, F_DUPFD_CLOEXEC, want);
	if (high >= 0)
		close(high);
}

static napi_value accept_start(napi_env env, napi_callback_info info)
{
	size_t argc = 4;
	napi_value argv[4], name, handle, realtime, out;
	int32_t fd, backlog, max_queue;
	napi_valuetype cb_type;
	struct acceptor *a;
	int err;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
	    napi_get_value_int32(env, argv[1], &backlog) != napi_ok || napi_get_value_int32(env, argv[2], &max_queue) != napi_ok ||
	    max_queue < 1 || napi_typeof(env, argv[3], &cb_type) != napi_ok || cb_type != napi_function) {
		napi_throw_type_error(env, NULL, "acceptStart(fd, backlog, maxQueue, onAccept): a socket, two integers (maxQueue >= 1) and a function");
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (a == NULL || (a->queue = calloc((size_t)max_queue, sizeof(int))) == NULL) {
		free(a);
		return throw_errno(env, "acceptStart", ENOMEM);
	}
	a->fd = fd;
	a->cap = max_queue;
	a->owners = 1;
	accept_lock_init(&a->lock);
	a->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->wake < 0) {
		err = errno;
		accept_free(a);
		return throw_errno(env, "eventfd", err);
	}
	if (napi_create_reference(env, argv[3], 1, &a->on_accept) != napi_ok)
		a->on_accept = NULL;
	if (a->on_accept == NULL || napi_create_string_utf8(env, "pgpool-ts accept", NAPI_AUTO_LENGTH, &name) != napi_ok ||
	    napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, a, accept_finalize, a, accept_call_js, &a->tsfn) != napi_ok) {
		if (a->on_accept != NULL)
			napi_delete_reference(env, a->on_accept);
		close(a->wake);
		accept_free(a);
		napi_throw_error(env, NULL, "acceptStart: could not create the thread-safe function");
		return NULL;
	}
	/* Room for every client the queue admits and as many descriptors again (servers, the rest).
	 * Everything is ready before listen(): from then on the kernel completes handshakes, and a
	 * burst in the first milliseconds should find the table grown. */
	grow_fd_table(fd, max_queue > INT32_MAX / 2 ? INT32_MAX : 2 * max_queue);
	/* Non-blocking, so that the thread waits only in poll(), where acceptStop can wake it. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 || listen(fd, backlog) != 0) {
		err = errno;
		napi_release_threadsafe_function(a->tsfn, napi_tsfn_release);
		return throw_errno(env, "listen", err);
	}
	err = accept_spawn(a);
	if (err != 0) {
		napi_release_threadsafe_function(a->tsfn, napi_tsfn_release);
		return throw_errno(env, "pthread_create", err);
	}
	if (napi_create_external(env, a, accept_handle_finalize, NULL, &handle) != napi_ok)
		return NULL;
	a->owners++;
	if (napi_create_object(env, &out) != napi_ok || napi_set_named_property(env, out, "handle", handle) != napi_ok ||
	    napi_get_boolean(env, a->realtime, &realtime) != napi_ok || napi_set_named_property(env, out, "realtime", realtime) != napi_ok)
		return NULL;
	return out;
}

static napi_value accept_stop(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1], out, v;
	struct acceptor *a;
	uint64_t one = 1;
	uint32_t i = 0;
	int value;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return NULL;
	if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&a) != napi_ok || a == NULL || a->stopped) {
		napi_throw_type_error(env, NULL, "acceptStop(handle): a running handle from acceptStart");
		return NULL;
	}
	/* The thread waits only in poll() on the eventfd, or in its last look (accept_settle), so the
	 * join takes ACCEPT_SETTLE_MS at most. */
	if (write(a->wake, &one, sizeof(one)) != sizeof(one))
		return throw_errno(env, "acceptStop: eventfd", errno);
	pthread_join(a->thread, NULL);
	a->stopped = true;
	/* Closed before the return, not a loop turn later: the kernel stops queueing connections for
	 * us before the caller goes on (and logs that it stopped listening). */
	if (!a->closed)
		close(a->fd);
	/* What was accepted but not handed on yet is the caller's, as Node's server would have handed
	 * it on before closing: those clients completed their handshake before the close. */
	if (napi_create_array(env, &out) != napi_ok)
		return NULL;
	while (accept_pop(a, &value)) {
		if (value < 0)
			continue;
		if (napi_create_int32(env, value, &v) != napi_ok || napi_set_element(env, out, i++, v) != napi_ok)
			close(value);
	}
	/* A wake-up still queued finds nothing; the finalizer runs after it. */
	napi_release_threadsafe_function(a->tsfn, napi_tsfn_release);
	return out;
}
#endif

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb)
{
	napi_value fn;

	return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
	       napi_set_named_property(env, exports, name, fn) == napi_ok;
}

static napi_value init(napi_env env, napi_value exports)
{
	if (!export_fn(env, exports, "peercred", peercred) || !export_fn(env, exports, "trim", trim) ||
	    !export_fn(env, exports, "tcpBind", tcp_bind) || !export_fn(env, exports, "tcpTune", tcp_tune) ||
	    !export_fn(env, exports, "listenTune", listen_tune) || !export_fn(env, exports, "tcpSocket", tcp_socket) || !export_fn(env, exports, "dgramConnect", dgram_connect) ||
	    !export_fn(env, exports, "dgramSend", dgram_send) || !export_fn(env, exports, "monotonicMs", monotonic_ms))
		return NULL;
#ifdef __linux__
	if (!export_fn(env, exports, "acceptStart", accept_start) || !export_fn(env, exports, "acceptStop", accept_stop))
		return NULL;
#endif
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
