// A node:test reporter that test/run.js adds next to spec/tap: once the run is over, every skipped
// test again, with its file and the reason it gave (t.skip('why'), { skip: 'why' }), so that
// skips are not lost in a long log. A skip without a reason is listed as such.

import path from 'node:path';

export default async function* skipSummary(source) {
  const skipped = [];
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { skip, name, file } = event.data;
    if (skip === undefined || skip === false) continue;
    const reason = typeof skip === 'string' && skip !== '' ? skip : 'NO REASON GIVEN';
    skipped.push(`  ${file === undefined ? '' : `${path.basename(file)}: `}${name}: ${reason}`);
  }
  if (skipped.length > 0) yield `\nrun.js: ${skipped.length} skipped test(s):\n${skipped.join('\n')}\n`;
}
