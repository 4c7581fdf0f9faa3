#!/usr/bin/env node
// Builds the optional native addon native/peercred (unix-socket peer credentials) with node-gyp.
// Run by the root package's `install` script, so `npm ci` and `npm install` build it, and by hand
// with `npm run build:native`.
//
// Optional by design: without a C toolchain (make, a C compiler, python3) or Node's headers the
// build fails, this prints why and how to fix it, and exits 0 so the install goes on. The pooler
// then runs without peer authentication and says so when a login needs it (src/net/peercred.ts).
//
// Offline: node-gyp is the copy bundled with npm (npm exports its path as npm_config_node_gyp
// inside scripts), and the headers come from `nodedir` (npm_config_nodedir) or, failing that,
// from the include/node directory next to the running node, where distribution packages put them.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = path.join(here, 'peercred');
const HOW = 'install make, a C compiler and python3 (Debian: apt-get install -y make gcc python3), then run `npm run build:native`';

function warn(why) {
  process.stderr.write(`pgpool-ts: the optional peercred addon was not built (${why}).\n`
    + `  Peer authentication (hba "peer", the password-less console login of user pgbouncer) stays off.\n`
    + `  To enable it: ${HOW}.\n`);
  process.exit(0);
}

if (process.platform === 'win32') warn('unix-socket peer credentials do not exist on Windows');

const prefix = path.resolve(path.dirname(process.execPath), '..');
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
].filter((p) => p !== undefined && p !== '');
const gyp = candidates.find((p) => fs.existsSync(p));
if (gyp === undefined) warn('node-gyp was not found (it comes with npm)');

const args = [gyp, 'rebuild', `--directory=${dir}`];
const nodedir = process.env.npm_config_nodedir
  || (fs.existsSync(path.join(prefix, 'include/node/node_api.h')) ? prefix : '');
if (nodedir !== '') args.push(`--nodedir=${nodedir}`);

const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.error !== undefined) warn(r.error.message);
if (r.status !== 0) warn(`node-gyp exited with ${r.status ?? r.signal}`);
process.stdout.write(`pgpool-ts: built ${path.relative(process.cwd(), path.join(dir, 'build/Release/peercred.node'))}\n`);
