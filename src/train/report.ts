// The evaluation report: report.json (every number and the data behind every figure) and
// report.html (one self-contained file: inline CSS, inline SVG plots, heatmaps as data URIs), so
// it can be mailed or archived with the model and still open anywhere.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Calibration, ImageMetrics, PixelMetrics, RocPoint } from './metrics.js';
import { curveSvg, histogramSvg, type Histogram } from './plots.js';

export interface ScoredImage {
  /** Path relative to the dataset root. */
  file: string;
  label: string;
  isGood: boolean;
  split: 'train' | 'val' | 'test' | 'all';
  score: number;
}

export interface HeatmapFigure {
  /** PNG path relative to the report folder. */
  png: string;
  file: string;
  label: string;
  score: number;
  verdict: 'pass' | 'reject';
  hasMask: boolean;
}

export interface ReportData {
  title: string;
  createdAt: string;
  model: { name: string; version: string; sha256: string; dir?: string };
  dataset: {
    root: string;
    manifestSha256: string;
    classes: { label: string; isGood: boolean; images: number; masks: number }[];
    skipped: { file: string; reason: string }[];
  };
  /** Images per split and label (training runs). */
  split?: Record<string, Record<string, number>>;
  /** The split policy in words (training runs). */
  splitPolicy?: string;
  threshold: { value: number; source: 'calibrated' | 'bundle'; targetFrr?: number; calibration?: Calibration };
  metrics: { test: ImageMetrics; val?: ImageMetrics; pixel?: Omit<PixelMetrics, 'proCurve'> };
  figures: {
    roc: { fpr: number; tpr: number; threshold: number | null }[];
    histogram: Histogram;
    pro?: { fpr: number; pro: number }[];
    heatmaps: HeatmapFigure[];
  };
  /** Method, parameters, seed, stages (training runs). */
  run?: Record<string, unknown>;
  scores: ScoredImage[];
}

export function rocForJson(points: RocPoint[]): ReportData['figures']['roc'] {
  return points.map((p) => ({ fpr: p.fpr, tpr: p.tpr, threshold: Number.isFinite(p.threshold) ? p.threshold : null }));
}

const esc = (s: unknown): string =>
  String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const pct = (v: number): string => (Number.isFinite(v) ? `${(v * 100).toFixed(1)} %` : 'n/a');
const num = (v: number, digits = 4): string => (Number.isFinite(v) ? String(+v.toPrecision(digits)) : 'n/a');

function table(head: string[], rows: (string | number)[][], cls = ''): string {
  return `<table class="${cls}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${typeof c === 'number' ? esc(c) : c}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

const CSS = `
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#1f2328;line-height:1.45}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:32px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#59636e;margin:0 0 16px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:130px}.card b{display:block;font-size:1.5em}
.card span{color:#59636e;font-size:.85em}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #d0d7de;padding:4px 10px;text-align:right}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:16px}.heat{display:flex;flex-wrap:wrap;gap:12px}
.heat figure{margin:0;width:260px}.heat img{width:260px;height:auto;border:1px solid #d0d7de;image-rendering:pixelated}
figcaption{font-size:.8em;color:#59636e;word-break:break-all}code{font-size:.85em}.warn{color:#9a6700}
details{margin:8px 0}`;

/** The HTML report; heatmap PNGs are read from `dir` and inlined. */
export async function renderHtml(data: ReportData, dir: string): Promise<string> {
  const m = data.metrics.test;
  const t = data.threshold;
  // 'test' for a training run (held-out split), 'all images' for eval on a whole folder.
  const set = data.scores.some((s) => s.split === 'all') ? 'all images' : 'test';
  const parts: string[] = [];
  parts.push(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">`);
  parts.push(`<title>${esc(data.title)}</title><style>${CSS}</style></head><body>`);
  parts.push(`<h1>${esc(data.title)}</h1>`);
  parts.push(
    `<p class="sub">Model <code>${esc(data.model.name)} ${esc(data.model.version)}</code> (sha256 <code>${esc(data.model.sha256.slice(0, 16))}…</code>) · dataset <code>${esc(data.dataset.root)}</code> · ${esc(data.createdAt)}</p>`,
  );
  const cards: [string, string][] = [
    [num(m.auroc), `image AUROC (${set})`],
    [pct(m.recall), 'recall at threshold (defects rejected)'],
    [pct(m.frr), 'false-reject rate (good rejected)'],
    [num(t.value, 6), t.source === 'calibrated' ? `threshold (val FRR ≤ ${pct(t.targetFrr ?? NaN)})` : 'threshold (from the bundle)'],
  ];
  const px = data.metrics.pixel;
  if (px) {
    cards.push([num(px.auroc), `pixel AUROC (${set})`]);
    cards.push([num(px.pro), `PRO (FPR ≤ ${px.proFprLimit})`]);
  }
  parts.push(`<div class="cards">${cards.map(([v, l]) => `<div class="card"><b>${esc(v)}</b><span>${esc(l)}</span></div>`).join('')}</div>`);
  parts.push(
    `<p>${set === 'test' ? 'Test split' : 'All images'}: ${m.n.good} good and ${m.n.defective} defective images. A part is rejected when its score is at or above the threshold, exactly as the agent decides.</p>`,
  );
  if (t.calibration) {
    parts.push(
      `<p>The threshold is the smallest score whose false-reject rate on the ${t.calibration.n} good validation images is at most ${pct(t.targetFrr ?? NaN)}: it rejects ${t.calibration.rejected} of them (${pct(t.calibration.frr)}).</p>`,
    );
  }

  parts.push(`<h2>Figures</h2><div class="figs">`);
  const rocMark = data.figures.roc.length ? { x: m.frr, y: m.recall, label: 'threshold' } : undefined;
  parts.push(
    curveSvg({
      title: `ROC curve (${set}, image level)`,
      xLabel: 'false-reject rate (good rejected)',
      yLabel: 'recall (defects rejected)',
      points: data.figures.roc.map((p) => ({ x: p.fpr, y: p.tpr })),
      diagonal: true,
      mark: Number.isFinite(m.frr) && Number.isFinite(m.recall) ? rocMark : undefined,
      legend: `AUROC ${num(m.auroc)}`,
    }),
  );
  parts.push(histogramSvg(data.figures.histogram, `Scores (${set}): good vs defective`));
  if (data.figures.pro && px) {
    parts.push(
      curveSvg({
        title: `PRO curve (${set}, pixel level)`,
        xLabel: 'false-positive rate (good pixels)',
        yLabel: 'per-region overlap',
        points: data.figures.pro.map((p) => ({ x: p.fpr, y: p.pro })),
        xMax: px.proFprLimit,
        legend: `PRO ${num(px.pro)}`,
      }),
    );
  }
  parts.push(`</div>`);

  parts.push(`<h2>Recall per defect class (${set})</h2>`);
  const per = Object.entries(m.recallPerClass);
  parts.push(per.length ? table(['class', 'images', 'rejected', 'recall'], per.map(([k, v]) => [esc(k), v.n, v.rejected, pct(v.recall)])) : '<p>No defective images.</p>');

  parts.push(`<h2>Confusion matrix (${set})</h2>`);
  parts.push(table(['truth \\ verdict', 'pass', 'reject'], m.confusion.labels.map((l, i) => [esc(l), m.confusion.counts[i]![0], m.confusion.counts[i]![1]])));
  parts.push(
    table(
      ['', 'pass', 'reject'],
      [
        ['good', `${m.confusion.tn} (true pass)`, `${m.confusion.fp} (false reject)`],
        ['defective', `${m.confusion.fn} (missed)`, `${m.confusion.tp} (caught)`],
      ],
    ),
  );

  if (px) {
    parts.push(`<h2>Pixel level (${set})</h2>`);
    parts.push(
      table(
        ['pixels', 'defect pixels', 'defect regions', 'pixel AUROC', `PRO (FPR ≤ ${px.proFprLimit})`],
        [[px.pixels, px.defectPixels, px.regions, num(px.auroc), num(px.pro)]],
      ),
    );
    parts.push(`<p>From the model's anomaly map (as the agent reports it) resampled to each mask; good images count as all-good masks.</p>`);
  }

  if (data.figures.heatmaps.length) {
    parts.push(`<h2>Example heatmaps (defective images, ${set})</h2><div class="heat">`);
    for (const h of data.figures.heatmaps) {
      let src = '';
      try {
        src = `data:image/png;base64,${(await readFile(path.join(dir, h.png))).toString('base64')}`;
      } catch {
        src = esc(h.png);
      }
      parts.push(
        `<figure><img alt="${esc(h.file)}" src="${src}"><figcaption><b>${esc(h.label)}</b> · score ${num(h.score)} · ${h.verdict}${h.hasMask ? ' · white: true defect outline' : ''}<br>${esc(h.file)}</figcaption></figure>`,
      );
    }
    parts.push(`</div>`);
  }

  // The mistakes are what a line engineer wants to look at first.
  const test = data.scores.filter((s) => s.split === 'test' || s.split === 'all');
  const falseRejects = test.filter((s) => s.isGood && s.score >= t.value).sort((a, b) => b.score - a.score);
  const misses = test.filter((s) => !s.isGood && s.score < t.value).sort((a, b) => a.score - b.score);
  parts.push(`<h2>Mistakes (${set})</h2>`);
  const list = (title: string, xs: ScoredImage[]): string =>
    `<details${xs.length ? ' open' : ''}><summary>${esc(title)}: ${xs.length}</summary>${
      xs.length ? table(['file', 'class', 'score'], xs.slice(0, 20).map((s) => [`<code>${esc(s.file)}</code>`, esc(s.label), num(s.score, 6)])) : ''
    }${xs.length > 20 ? `<p>… and ${xs.length - 20} more (report.json lists every score).</p>` : ''}</details>`;
  parts.push(list('Good images rejected', falseRejects));
  parts.push(list('Defective images passed', misses));

  if (data.metrics.val) {
    const v = data.metrics.val;
    parts.push(`<h2>Validation split</h2>`);
    parts.push(
      table(['good', 'defective', 'AUROC', 'recall', 'FRR'], [[v.n.good, v.n.defective, num(v.auroc), pct(v.recall), pct(v.frr)]]),
    );
  }

  parts.push(`<h2>Dataset</h2>`);
  parts.push(
    table(
      ['class', 'images', 'masks'],
      data.dataset.classes.map((c) => [esc(c.label), c.images, c.masks]),
    ),
  );
  parts.push(`<p>Dataset manifest sha256 <code>${esc(data.dataset.manifestSha256)}</code></p>`);
  if (data.split) {
    const labels = data.dataset.classes.map((c) => c.label);
    parts.push(table(['split', ...labels], Object.entries(data.split).map(([k, v]) => [esc(k), ...labels.map((l) => v[l] ?? 0)])));
  }
  if (data.splitPolicy) parts.push(`<p>Split policy: ${esc(data.splitPolicy)}</p>`);
  if (data.dataset.skipped.length) {
    parts.push(`<p class="warn">Skipped (unreadable): ${data.dataset.skipped.length}</p>`);
    parts.push(table(['file', 'reason'], data.dataset.skipped.map((s) => [`<code>${esc(s.file)}</code>`, esc(s.reason)])));
  }
  if (data.run) {
    parts.push(`<h2>Run</h2><pre>${esc(JSON.stringify(data.run, null, 2))}</pre>`);
  }
  parts.push(`</body></html>\n`);
  return parts.join('\n');
}

/** Writes report.json and report.html into dir (heatmap PNGs must already be there). */
export async function writeReport(dir: string, data: ReportData): Promise<{ json: string; html: string }> {
  const json = path.join(dir, 'report.json');
  const html = path.join(dir, 'report.html');
  await writeFile(json, JSON.stringify(data, null, 2) + '\n');
  await writeFile(html, await renderHtml(data, dir));
  return { json, html };
}
