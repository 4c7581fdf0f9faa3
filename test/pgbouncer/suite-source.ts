// PgBouncer's own pytest suite, laid out from Debian's source package of a pinned version, in a
// cache outside the repository (it is third-party code: never committed, never copied into it).
//
// `apt-get source` needs a deb-src entry for the suite the version comes from (trixie); .ci/run
// adds one and runs apt-get update, which take root. Unpacking needs dpkg-source (dpkg-dev).
//
// What the cache holds, all that the suite reads outside its test/ directory: test/ (the suite),
// pyproject.toml (pytest settings: asyncio mode, 30 s per test), include/bouncer.h (the suite reads
// MAX_PASSWORD from it), config.mak (the two lines ./configure would write that the suite reads:
// tls_support, ldap_support) and SOURCE (where it came from).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '../support/run-cmd.js';

/** The pinned source package: PgBouncer 1.24.1, as Debian 13 (trixie) ships it. */
export const SOURCE_PACKAGE = 'pgbouncer';
export const SOURCE_VERSION = '1.24.1-1+deb13u2';
const UPSTREAM_DIR = 'pgbouncer-1.24.1';

const APT_TIMEOUT_MS = 10 * 60_000;

/** The cache: PGB_SUITE_CACHE, else ~/.cache/pgpool-ts/pgbouncer-suite-<version>. */
export function suiteCacheDir(): string {
  const given = process.env.PGB_SUITE_CACHE;
  if (given !== undefined && given !== '') return path.resolve(given);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'pgpool-ts', `pgbouncer-suite-${SOURCE_VERSION}`);
}

/** The laid-out suite, fetched and unpacked on first use. Throws with what to do when it cannot. */
export async function suiteDir(repoRoot: string): Promise<string> {
  const dir = suiteCacheDir();
  if (fs.existsSync(path.join(dir, 'SOURCE'))) return dir;
  const rel = path.relative(repoRoot, dir);
  if (!rel.startsWith('..') && !path.isAbsolute(rel)) throw new Error(`refusing to lay PgBouncer's suite out inside the repository (${dir})`);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgb-source-'));
  try {
    console.error(`pgbouncer suite: apt-get source ${SOURCE_PACKAGE}=${SOURCE_VERSION} (into ${work})`);
    const r = await runCommand('apt-get', ['source', '-q', `${SOURCE_PACKAGE}=${SOURCE_VERSION}`], { cwd: work, timeoutMs: APT_TIMEOUT_MS });
    const tree = path.join(work, UPSTREAM_DIR);
    if (r.code !== 0 || !fs.existsSync(path.join(tree, 'test', 'utils.py'))) {
      throw new Error(
        `apt-get source ${SOURCE_PACKAGE}=${SOURCE_VERSION} failed (exit ${r.code}):\n${r.stderr.trim()}\n` +
          `It needs a deb-src entry for Debian trixie (source only) and dpkg-dev, e.g. as root:\n` +
          `  printf 'Types: deb-src\\nURIs: http://deb.debian.org/debian\\nSuites: trixie\\nComponents: main\\n` +
          `Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > /etc/apt/sources.list.d/trixie-src.sources\n` +
          `  apt-get update && apt-get install -y dpkg-dev\n(.ci/run does this.)`,
      );
    }
    const tmp = `${dir}.partial-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(path.join(tmp, 'include'), { recursive: true });
    fs.cpSync(path.join(tree, 'test'), path.join(tmp, 'test'), { recursive: true });
    fs.copyFileSync(path.join(tree, 'include', 'bouncer.h'), path.join(tmp, 'include', 'bouncer.h'));
    fs.copyFileSync(path.join(tree, 'pyproject.toml'), path.join(tmp, 'pyproject.toml'));
    fs.writeFileSync(path.join(tmp, 'config.mak'), 'tls_support = yes\nldap_support = no\n');
    fs.writeFileSync(path.join(tmp, 'SOURCE'), `Debian source package ${SOURCE_PACKAGE} ${SOURCE_VERSION} (apt-get source)\n`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return dir;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
