// Pooler-minted cancel keys: the BackendKeyData each client is given, and where a CancelRequest
// carrying one must go. The layout is PgBouncer 1.21+'s, so PgBouncer peers and ours route each
// other's keys.
//
// A key is the 4-byte process id followed by the secret (4 bytes under protocol 3.0, 32 under 3.2),
// read as one byte string k[0..n-1]:
//   k[0] & 0x80 = 0   the process id stays positive (pg_basebackup once failed on a negative one)
//   k[1], k[2]        peer_id, little-endian, when peering is on (peer_id > 0)
//   k[3]              the worker that minted it, when the instance runs several (pgpool-ts only)
//   k[n-1] & 0x03     forwards left: minted 3, one less per forward to a peer, dropped at 0
// The rest is random: 45 bits of a 3.0 key with peering (as PgBouncer), 37 with workers too; a 3.2
// key keeps 261 or more.
import crypto from 'node:crypto';

/** The two low bits of a key's last byte: forwards left (PgBouncer's CANCELLATION_TTL_MASK). */
const TTL_MASK = 0x03;

/** Who this process is in the key layout. */
export interface KeyOrigin {
  /** peer_id; 0 = peering off. */
  readonly peerId: number;
  /** This worker's index (1..255) when the instance runs several workers, else 0. */
  readonly worker: number;
}

export type CancelRoute =
  /** Ours: look `key` up (its forwards-left bits restored to how they were minted). */
  | { readonly to: 'local'; readonly key: Buffer }
  /** Another peer's: forward `key` (one forward spent) to the [peers] entry `peerId`. */
  | { readonly to: 'peer'; readonly peerId: number; readonly key: Buffer }
  /** Another worker's of this instance: hand `key` as it came to worker `worker`. */
  | { readonly to: 'worker'; readonly worker: number; readonly key: Buffer }
  | { readonly to: 'drop'; readonly reason: string };

/** The key a CancelRequest carries, as one byte string (process id, then the secret). */
export function cancelKey(pid: number, secret: Buffer): Buffer {
  const key = Buffer.allocUnsafe(4 + secret.length);
  key.writeInt32BE(pid, 0);
  secret.copy(key, 4);
  return key;
}

/** Where a CancelRequest with `key` goes, seen from `self` (PgBouncer's accept_cancel_request). */
export function routeCancel(key: Buffer, self: KeyOrigin): CancelRoute {
  if (key.length < 8) return { to: 'drop', reason: 'invalid cancel key length' };
  const last = key.length - 1;
  if (self.peerId > 0) {
    const peerId = key[1]! | (key[2]! << 8);
    if (peerId !== self.peerId) {
      if ((key[last]! & TTL_MASK) === 0) return { to: 'drop', reason: 'failed to forward cancel request because its TTL was exhausted' };
      const spent = Buffer.from(key);
      spent[last] = spent[last]! - 1;
      return { to: 'peer', peerId, key: spent };
    }
  }
  if (self.worker > 0 && key[3] !== self.worker) return { to: 'worker', worker: key[3]!, key };
  if (self.peerId === 0) return { to: 'local', key };
  const mine = Buffer.from(key);
  mine[last] = mine[last]! | TTL_MASK;
  return { to: 'local', key: mine };
}

/** Live keys → their owner; minting never hands out a key that is in use. */
export class CancelKeys<T> {
  private readonly owners = new Map<string, T>();

  /** A fresh key with a secret of `secretLength` bytes, registered to `owner`. */
  mint(secretLength: number, self: KeyOrigin, owner: T): Buffer {
    for (;;) {
      const key = crypto.randomBytes(4 + secretLength);
      key[0] = key[0]! & 0x7f;
      if (self.peerId > 0) {
        key[1] = self.peerId & 0xff;
        key[2] = self.peerId >> 8;
        key[key.length - 1] = key[key.length - 1]! | TTL_MASK;
      }
      if (self.worker > 0) key[3] = self.worker;
      // A process id of 0 reads as "no key" to some drivers.
      if (key.readInt32BE(0) === 0) continue;
      const id = key.toString('latin1');
      if (this.owners.has(id)) continue;
      this.owners.set(id, owner);
      return key;
    }
  }

  get(key: Buffer): T | undefined {
    return this.owners.get(key.toString('latin1'));
  }

  delete(key: Buffer): void {
    this.owners.delete(key.toString('latin1'));
  }
}
