// The admin console: the virtual database `pgbouncer`, answering PgBouncer's SHOW and control
// commands over the simple query protocol.
import type { AdminConsole, ClientConn } from '../client/client-conn.js';
import type { Config } from '../config/types.js';
import { Errors, type PoolerError } from '../errors.js';
import * as encode from '../protocol/encode.js';
import type { Registry } from '../pool/registry.js';

/** What the console reads and drives; implemented by App. */
export interface AdminHost {
  readonly cfg: Config;
  readonly registry: Registry;
  readonly clients: ReadonlySet<ClientConn>;
  readonly version: string;
}

export class Console implements AdminConsole {
  constructor(private readonly host: AdminHost) {}

  login(client: ClientConn): PoolerError | null {
    const { adminUsers, statsUsers, authType } = this.host.cfg;
    if (adminUsers.includes(client.user) || statsUsers.includes(client.user) || authType === 'any') return null;
    return Errors.authRejected('not allowed');
  }

  query(client: ClientConn, sql: string): void {
    const words = sql.trim().replace(/;\s*$/, '').split(/\s+/);
    const out: Buffer[] = [];
    if (words[0]?.toUpperCase() === 'SHOW' && words[1]?.toUpperCase() === 'VERSION') {
      out.push(
        encode.rowDescription([{ name: 'version', typeOid: 25 }]),
        encode.dataRow([`pgpool-ts ${this.host.version}`]),
        encode.commandComplete('SHOW'),
      );
    } else {
      out.push(encode.errorResponse({ severity: 'ERROR', code: '42601', message: `invalid command '${sql.trim()}', use SHOW HELP;` }));
    }
    out.push(encode.readyForQuery(0x49));
    client.socket.write(Buffer.concat(out));
  }
}
