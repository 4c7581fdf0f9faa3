// Unix-socket peer credentials (SO_PEERCRED, through the native addon: see native.ts) and the OS
// user name they stand for. Node's net cannot read the credentials, and the hba `peer` method and
// the console login of user `pgbouncer` rest on them.
//
// Without the addon each peer login is refused with the reason and the fix; the reason is logged
// once, at the first login that needed it.
//
// uid → name: our own uid through os.userInfo() (getpwuid_r, so NSS sources such as LDAP or sssd
// count), any other uid from /etc/passwd. A uid known only to NSS has no name here and its peer
// login is refused ("could not look up local user ID"), never matched by guess. NSS is not asked
// for other uids because getpwuid_r may block on the network, and this runs on the event loop.
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import { log } from '../log.js';
import { ADDON_PATH, nativeFunction, type PeerCred } from './native.js';

export type { PeerCred };

const PURPOSE = 'peer authentication is unavailable';

let told = false;

/** Whether peer credentials can be read at all (the addon loaded). */
export function peerCredAvailable(): boolean {
  return 'fn' in nativeFunction('peercred', PURPOSE);
}

/** The credentials of the process that connected `socket` (a unix-domain socket), or why not. */
export function peerCredentials(socket: net.Socket): { cred: PeerCred } | { error: string } {
  const r = readPeerCred(socket);
  if ('error' in r && !peerCredAvailable() && !told) {
    log().warn({ addon: ADDON_PATH }, r.error);
    told = true;
  }
  return r;
}

/** The pid of the process that connected `socket`, for the log prefix `unix(pid):port` as
 * PgBouncer writes it; null when it cannot be read (no addon: not worth a warning here). */
export function peerPid(socket: net.Socket): number | null {
  const r = readPeerCred(socket);
  return 'cred' in r && r.cred.pid > 0 ? r.cred.pid : null;
}

function readPeerCred(socket: net.Socket): { cred: PeerCred } | { error: string } {
  const a = nativeFunction('peercred', PURPOSE);
  if ('error' in a) return { error: a.error };
  // The handle of an accepted unix socket is a Pipe; its fd is public on Unix but not typed.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return { error: 'cannot read the peer credentials: the socket has no file descriptor' };
  try {
    return { cred: a.fn(fd) };
  } catch (err) {
    return { error: `cannot read the peer credentials: ${(err as Error).message}` };
  }
}

let ownName: string | null | undefined;

/** Our own OS user name (cached: the process never changes uid after startup's -u). */
function ownUserName(): string | null {
  if (ownName === undefined) {
    try {
      ownName = os.userInfo().username;
    } catch {
      // A container may run under a uid with no passwd entry at all.
      ownName = null;
    }
  }
  return ownName;
}

/** /etc/passwd by uid, re-read when the file changes. The first entry of a uid wins, as with
 * getpwuid(). */
let passwd: { mtimeMs: number; size: number; byUid: Map<number, string> } | null = null;
const PASSWD = '/etc/passwd';

function passwdName(uid: number): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(PASSWD);
  } catch {
    return null;
  }
  if (passwd === null || passwd.mtimeMs !== st.mtimeMs || passwd.size !== st.size) {
    const byUid = new Map<number, string>();
    let text = '';
    try {
      text = fs.readFileSync(PASSWD, 'utf8');
    } catch {
      return null;
    }
    for (const line of text.split('\n')) {
      // name:password:uid:gid:gecos:home:shell; `+`/`-` lines are NIS compat markers, not users.
      const f = line.split(':');
      const [name, , uidText] = f;
      if (f.length < 7 || name === undefined || name === '' || name.startsWith('+') || name.startsWith('-')) continue;
      if (uidText === undefined || !/^\d+$/.test(uidText)) continue;
      const id = Number(uidText);
      if (!byUid.has(id)) byUid.set(id, name);
    }
    passwd = { mtimeMs: st.mtimeMs, size: st.size, byUid };
  }
  return passwd.byUid.get(uid) ?? null;
}

/** The OS user name of `uid`, or null when it has none we can trust (see the header). */
export function osUserName(uid: number): string | null {
  if (uid === process.getuid?.()) return ownUserName() ?? passwdName(uid);
  return passwdName(uid);
}

/** Whether the peer runs as the pooler's own OS user (PgBouncer compares the uids). */
export function isOwnUid(cred: PeerCred): boolean {
  return cred.uid === process.getuid?.();
}
