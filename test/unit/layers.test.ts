// The layers of docs/architecture.md hold: no module imports (at run time) from a layer listed
// after its own. The layer table is read from that page, so the page and the code cannot drift
// apart: a new module that is in no layer fails here too. `import type` and callbacks are the
// sanctioned ways up the layers and are not imports at run time.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SRC = path.join(ROOT, 'src');

/** Layer number per module name token: `net/` (a folder), `metrics/stats` or `app` (one file). */
function readLayers(markdown: string): Map<string, number> {
  const block = /```\nlayer[^\n]*\n([\s\S]*?)```/.exec(markdown);
  assert.ok(block, 'docs/architecture.md has no ```layer block');
  const layers = new Map<string, number>();
  for (const line of block[1]!.split('\n')) {
    const m = /^(\d+)\s+(.+?)(?:\s{2,}.*)?$/.exec(line);
    if (m === null) continue;
    for (const token of m[2]!.split(/\s+/)) layers.set(token, Number(m[1]));
  }
  return layers;
}

/** The layer of a module path relative to src/ without extension, e.g. `net/tls`. */
function layerOf(layers: ReadonlyMap<string, number>, mod: string): number | undefined {
  return layers.get(mod) ?? (mod.includes('/') ? layers.get(mod.slice(0, mod.indexOf('/') + 1)) : undefined);
}

/** Relative imports and re-exports that exist at run time (not `import type`, not all-`type`
 * named specifiers), as module paths relative to src/. */
function runtimeImports(file: string, text: string): string[] {
  const out: string[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?([\s\S]*?)\s*from\s*'([^']+)'|^\s*import\s+'([^']+)'/gm;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const spec = m[4] ?? m[5]!;
    if (!spec.startsWith('.')) continue;
    if (m[2] !== undefined) continue;
    const clause = m[3] ?? '';
    const named = /^\{([\s\S]*)\}$/.exec(clause.trim());
    if (named !== null) {
      const names = named[1]!.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (names.length > 0 && names.every((n) => n.startsWith('type '))) continue;
    }
    const target = path.relative(SRC, path.resolve(path.dirname(file), spec)).replace(/\.js$/, '');
    out.push(target);
  }
  return out;
}

/** Every import up the layers, and every module in no layer, as readable lines. */
function problems(layers: ReadonlyMap<string, number>, sources: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [file, text] of sources) {
    const mod = path.relative(SRC, file).replace(/\.ts$/, '');
    const own = layerOf(layers, mod);
    if (own === undefined) {
      out.push(`src/${mod}.ts is in no layer of docs/architecture.md`);
      continue;
    }
    for (const target of runtimeImports(file, text)) {
      const theirs = layerOf(layers, target);
      if (theirs !== undefined && theirs > own) {
        out.push(`src/${mod}.ts (layer ${own}) imports src/${target}.ts (layer ${theirs}): make it \`import type\` or a callback`);
      }
    }
  }
  return out;
}

function sourcesUnder(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts') || e.name.endsWith('.d.ts')) continue;
    const file = path.join(e.parentPath, e.name);
    out.set(file, fs.readFileSync(file, 'utf8'));
  }
  return out;
}

describe('layers (docs/architecture.md)', () => {
  const layers = readLayers(fs.readFileSync(path.join(ROOT, 'docs/architecture.md'), 'utf8'));

  it('every module is in a layer and imports nothing from a later layer', () => {
    const sources = sourcesUnder(SRC);
    assert.deepEqual(problems(layers, sources), []);
    // The check saw the imports it judges (a parse that found none would pass vacuously).
    const seen = [...sources].reduce((n, [file, text]) => n + runtimeImports(file, text).length, 0);
    assert.ok(seen > 50, `only ${seen} imports found under src/`);
  });

  it('reports an import up the layers, and lets type-only imports through', () => {
    const file = path.join(SRC, 'protocol/framer.ts');
    const up = "import { Pool } from '../pool/pool.js';\n";
    const typeOnly = "import type { Pool } from '../pool/pool.js';\nimport { type PoolHost, type PoolStats } from '../pool/pool.js';\n";
    const multiLine = "import {\n  now,\n  refresh,\n} from '../clock.js';\nexport { Pool } from '../pool/pool.js';\n";
    assert.deepEqual(problems(layers, new Map([[file, typeOnly]])), []);
    assert.equal(problems(layers, new Map([[file, up]])).length, 1);
    assert.deepEqual(runtimeImports(file, multiLine), ['clock', 'pool/pool']);
    assert.match(problems(layers, new Map([[path.join(SRC, 'nowhere.ts'), '']]))[0]!, /in no layer/);
  });
});
