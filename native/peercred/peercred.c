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
 * N-API only (no node-addon-api, no C++): the addon builds with the C compiler and the headers
 * node ships, and one build serves every Node version with the same N-API level.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err)
{
	char msg[256];
	char code[32];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(err));
	snprintf(code, sizeof(code), "E%d", err);
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

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb)
{
	napi_value fn;

	return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
	       napi_set_named_property(env, exports, name, fn) == napi_ok;
}

static napi_value init(napi_env env, napi_value exports)
{
	if (!export_fn(env, exports, "peercred", peercred) || !export_fn(env, exports, "trim", trim))
		return NULL;
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
