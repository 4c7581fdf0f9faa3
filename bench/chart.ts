// docs/benchmarks.svg as plain text: one panel per scenario (each with its own scale, since a
// 1-client run and a 32-client run differ by an order of magnitude), a bar per target at its
// median, a whisker for min–max; then, for the scenarios that measured it, one panel of the CPU
// the process in front of PostgreSQL spent per transaction (pgpool-ts against Node's floor and
// PgBouncer). No browser, no dependency.

import type { ScenarioSummary } from './report.js';
import { TARGET_LABEL, TARGET_ORDER, type TargetName } from './targets.js';

const COLORS: Record<TargetName, string> = {
  'pgpool-ts': '#2b6cb0',
  'pgpool-ts-w2': '#63b3ed',
  pgbouncer: '#dd6b20',
  direct: '#718096',
  floor: '#805ad5',
  'naive-proxy': '#38a169',
};

const PANEL_W = 320;
const PANEL_H = 240;
const COLS = 3;
const HEADER_H = 64;
const FOOTER_H = 40;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function compact(x: number): string {
  if (x >= 10_000) return `${(x / 1000).toFixed(0)}k`;
  if (x >= 1_000) return `${(x / 1000).toFixed(1).replace(/\.0$/, '')}k`;
  return x.toFixed(0);
}

/** A round axis maximum (1, 2, 2.5, 5 × 10^n) at or above `x`. */
function niceCeil(x: number): number {
  if (x <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** One bar of a panel: median, and the whisker's ends when known. */
interface Bar {
  target: TargetName;
  median: number | null;
  min: number | null;
  max: number | null;
}

const throughputBars = (s: ScenarioSummary): Bar[] => s.targets.map((t) => ({ target: t.target, median: t.medianTps, min: t.minTps, max: t.maxTps }));

/** CPU per transaction of the processes in front of PostgreSQL (direct has none to show). */
const cpuBars = (s: ScenarioSummary): Bar[] =>
  s.targets.filter((t) => t.target !== 'direct').map((t) => ({ target: t.target, median: t.medianCpuUsPerTx, min: null, max: null }));

function panel(title: string, sub: string, bars: readonly Bar[], x0: number, y0: number): string[] {
  const out: string[] = [];
  const left = x0 + 48;
  const right = x0 + PANEL_W - 12;
  const top = y0 + 34;
  const bottom = y0 + PANEL_H - 34;
  const yMax = niceCeil(Math.max(1, ...bars.map((t) => t.max ?? t.median ?? 0)) * 1.08);
  const y = (v: number) => bottom - (v / yMax) * (bottom - top);

  out.push(`<text x="${x0 + PANEL_W / 2}" y="${y0 + 16}" class="title">${esc(title)}</text>`);
  out.push(`<text x="${x0 + PANEL_W / 2}" y="${y0 + 29}" class="sub">${esc(sub)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    out.push(`<line x1="${left}" x2="${right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" class="grid"/>`);
    out.push(`<text x="${left - 5}" y="${(y(v) + 3.5).toFixed(1)}" class="tick">${compact(v)}</text>`);
  }
  const slot = (right - left) / bars.length;
  const barW = slot * 0.62;
  bars.forEach((t, i) => {
    const cx = left + slot * (i + 0.5);
    out.push(`<text x="${cx.toFixed(1)}" y="${bottom + 14}" class="xlabel">${esc(TARGET_LABEL[t.target])}</text>`);
    if (t.median === null) {
      out.push(`<text x="${cx.toFixed(1)}" y="${bottom - 6}" class="err">failed</text>`);
      return;
    }
    const h = bottom - y(t.median);
    const range = t.min === null ? '' : ` (min ${t.min.toFixed(0)}, max ${t.max?.toFixed(0)})`;
    out.push(
      `<rect x="${(cx - barW / 2).toFixed(1)}" y="${y(t.median).toFixed(1)}" width="${barW.toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[t.target]}">` +
        `<title>${esc(`${TARGET_LABEL[t.target]}: ${t.median.toFixed(0)}${range}`)}</title></rect>`,
    );
    if (t.min !== null && t.max !== null && t.max > t.min) {
      const [a, b] = [y(t.min).toFixed(1), y(t.max).toFixed(1)];
      out.push(`<path d="M${cx.toFixed(1)} ${a}V${b}M${(cx - 5).toFixed(1)} ${a}h10M${(cx - 5).toFixed(1)} ${b}h10" class="whisker"/>`);
    }
    const labelY = Math.min(y(t.median), t.max === null ? Infinity : y(t.max)) - 4;
    out.push(`<text x="${cx.toFixed(1)}" y="${labelY.toFixed(1)}" class="value">${t.median < 100 ? t.median.toFixed(1) : compact(t.median)}</text>`);
  });
  out.push(`<line x1="${left}" x2="${right}" y1="${bottom}" y2="${bottom}" class="axis"/>`);
  return out;
}

/** `caption`: lines under the panels (how the numbers were made). */
export function renderChart(summaries: readonly ScenarioSummary[], caption: readonly string[]): string {
  const panels = [
    ...summaries.map((s) => ({ title: s.scenario, sub: `median ${s.unit}`, bars: throughputBars(s) })),
    // Per transaction only where pgbench counted transactions: a login or a MB is another unit.
    ...summaries
      .filter((s) => s.unit === 'TPS' && s.targets.some((t) => t.target === 'pgpool-ts' && t.medianCpuUsPerTx !== null))
      .map((s) => ({ title: s.scenario, sub: 'pooler CPU µs per transaction (lower is better)', bars: cpuBars(s) })),
  ];
  const cols = Math.min(COLS, Math.max(1, panels.length));
  const rows = Math.ceil(panels.length / cols);
  const width = cols * PANEL_W;
  const height = HEADER_H + rows * PANEL_H + FOOTER_H;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(
    '<style>.title{font-size:14px;font-weight:bold;text-anchor:middle}.sub{font-size:11px;fill:#555;text-anchor:middle}' +
      '.tick{font-size:10px;fill:#555;text-anchor:end}.xlabel{font-size:10.5px;text-anchor:middle}.value{font-size:10.5px;text-anchor:middle}' +
      '.err{font-size:11px;fill:#c53030;text-anchor:middle}.grid{stroke:#e2e8f0}.axis{stroke:#333}.whisker{stroke:#1a202c;fill:none}' +
      '.legend{font-size:12px}.caption{font-size:11px;fill:#555}</style>',
  );
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  out.push(`<text x="12" y="22" font-size="16" font-weight="bold">pgpool-ts benchmark: median throughput per scenario, then pooler CPU per transaction</text>`);
  TARGET_ORDER.forEach((t, i) => {
    const x = 12 + i * 120;
    out.push(`<rect x="${x}" y="34" width="12" height="12" fill="${COLORS[t]}"/>`);
    out.push(`<text x="${x + 17}" y="44" class="legend">${esc(TARGET_LABEL[t])}</text>`);
  });
  panels.forEach((p, i) => {
    out.push(...panel(p.title, p.sub, p.bars, (i % cols) * PANEL_W, HEADER_H + Math.floor(i / cols) * PANEL_H));
  });
  caption.forEach((line, i) => {
    out.push(`<text x="12" y="${height - FOOTER_H + 12 + i * 14}" class="caption">${esc(line)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
