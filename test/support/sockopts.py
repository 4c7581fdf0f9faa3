#!/usr/bin/env python3
"""Read the socket options of another process's TCP sockets with getsockopt (tcp-settings.test.ts).

A socket option belongs to the socket, not to the connection: only the process that holds it can
read it. pidfd_getfd (Linux 5.6+) gives this process a duplicate of the target's descriptor, on
which getsockopt reads the very socket the target set up. Needs ptrace rights over the target
(root, or its parent with yama ptrace_scope <= 1).

Usage: sockopts.py PID
Prints one JSON line: a list of {"local": port, "remote": port, "listen": bool, options...} for
every TCP socket of PID (remote 0 for a listening socket).
"""
import ctypes
import json
import os
import socket
import sys

SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438


def tcp_inodes(pid):
    """inode -> (local port, remote port, listening) from the target's view of /proc/net/tcp{,6}."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
                    out[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state == "0A")
        except FileNotFoundError:
            pass
    return out


def main():
    pid = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    inodes = tcp_inodes(pid)
    rows = []
    for fd_name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd_name}")
        except OSError:
            continue
        if not link.startswith("socket:["):
            continue
        inode = int(link[8:-1])
        if inode not in inodes:
            continue
        local, remote, listening = inodes[inode]
        dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd_name), 0)
        if dup < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        s = socket.socket(fileno=dup)
        try:
            get = lambda level, opt: s.getsockopt(level, opt)  # noqa: E731
            row = {
                "local": local,
                "remote": remote,
                "listen": listening,
                "keepalive": get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "keepidle": get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "keepintvl": get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "keepcnt": get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout": get(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                "sndbuf": get(socket.SOL_SOCKET, socket.SO_SNDBUF),
                "rcvbuf": get(socket.SOL_SOCKET, socket.SO_RCVBUF),
                "nodelay": get(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                "defer_accept": get(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT),
            }
        finally:
            # Our duplicate only: the target's descriptor stays open.
            s.close()
        rows.append(row)
    print(json.dumps(rows))


main()
