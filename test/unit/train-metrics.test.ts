import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  auroc,
  calibrateThreshold,
  confusionMatrix,
  imageMetrics,
  labelRegions,
  nextUp,
  pixelMetrics,
  recallPerClass,
  rejectRate,
  rocCurve,
  trapezoid,
  upsampleMap,
} from '../../src/train/metrics.js';
import { histogram, histogramSvg, curveSvg, colourMap } from '../../src/train/plots.js';

const close = (a: number, b: number, eps = 1e-12): void => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

/** Reference AUROC by brute force over every (positive, negative) pair. */
function pairsAuroc(pos: number[], neg: number[]): number {
  let w = 0;
  for (const p of pos) for (const n of neg) w += p > n ? 1 : p === n ? 0.5 : 0;
  return w / (pos.length * neg.length);
}

describe('image AUROC and ROC', () => {
  // Hand count: 0.9 and 0.8 beat all 4 negatives (8); 0.4 beats 0.1 and 0.3 (2) and ties 0.4 (0.5).
  const pos = [0.9, 0.8, 0.4];
  const neg = [0.1, 0.4, 0.5, 0.3];

  it('is the Mann-Whitney statistic with ties counted as 0.5', () => {
    assert.equal(auroc(pos, neg), 10.5 / 12);
    assert.equal(auroc([1, 1], [1, 1]), 0.5);
    assert.equal(auroc([2], [1]), 1);
    assert.equal(auroc([1], [2]), 0);
    assert.ok(Number.isNaN(auroc([], [1])));
  });

  it('matches the pairwise count on random scores with many ties', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 30 }), fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 30 }), (p, n) => {
        close(auroc(p, n), pairsAuroc(p, n));
      }),
    );
  });

  it('gives one ROC point per distinct score, diagonal steps on ties, area = AUROC', () => {
    const roc = rocCurve(pos, neg);
    assert.deepEqual(
      roc.map((p) => [p.fpr, p.tpr, p.threshold]),
      [
        [0, 0, Infinity],
        [0, 1 / 3, 0.9],
        [0, 2 / 3, 0.8],
        [0.25, 2 / 3, 0.5],
        [0.5, 1, 0.4],
        [0.75, 1, 0.3],
        [1, 1, 0.1],
      ],
    );
    close(trapezoid(roc.map((p) => ({ x: p.fpr, y: p.tpr }))), 0.875);
  });
});

describe('threshold calibration', () => {
  const good = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

  it('is the smallest threshold whose FRR is at most the target', () => {
    // 10 % of 10 allows one rejection: the threshold sits just above the second-highest score.
    const c = calibrateThreshold(good, 0.1);
    assert.equal(c.threshold, nextUp(0.9));
    assert.deepEqual([c.frr, c.rejected, c.allowed, c.n], [0.1, 1, 1, 10]);
    // Below 10 % nothing may be rejected.
    assert.equal(calibrateThreshold(good, 0.05).threshold, nextUp(1.0));
    assert.equal(calibrateThreshold(good, 0.05).frr, 0);
    // 0.3 * 10 is 3.0000000000000004 in floating point, and 0.7 * 10 = 7: three/seven allowed.
    assert.equal(calibrateThreshold(good, 0.3).threshold, nextUp(0.7));
    assert.equal(calibrateThreshold(good, 0.7).threshold, nextUp(0.3));
  });

  it('does not reject more than allowed when good scores tie', () => {
    // Any threshold <= 0.5 rejects three of four (75 %); the smallest one within 25 % is just above 0.5.
    const c = calibrateThreshold([0.5, 0.5, 0.5, 0.2], 0.25);
    assert.equal(c.threshold, nextUp(0.5));
    assert.equal(c.frr, 0);
  });

  it('holds the target and is minimal for any scores (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: -100, max: 100, noNaN: true }), { minLength: 1, maxLength: 60 }),
        fc.double({ min: 0, max: 0.99, noNaN: true }),
        (scores, target) => {
          const c = calibrateThreshold(scores, target);
          assert.ok(rejectRate(scores, c.threshold) <= target + 1e-12);
          // Every threshold below it down to the next score rejects the same as that score does.
          const justBelow = [...scores].filter((s) => s < c.threshold).sort((a, b) => b - a)[0];
          if (justBelow !== undefined) assert.ok(rejectRate(scores, justBelow) > target);
        },
      ),
    );
  });

  it('refuses an empty calibration set', () => {
    assert.throws(() => calibrateThreshold([], 0.01), /no good scores/);
  });
});

describe('recall, FRR and confusion matrix', () => {
  const items = [
    { label: 'good', isGood: true, score: 0.1 },
    { label: 'good', isGood: true, score: 0.6 },
    { label: 'good', isGood: true, score: 0.2 },
    { label: 'good', isGood: true, score: 0.3 },
    { label: 'scratch', isGood: false, score: 0.9 },
    { label: 'scratch', isGood: false, score: 0.5 },
    { label: 'scratch', isGood: false, score: 0.4 },
    { label: 'dust', isGood: false, score: 0.7 },
  ];

  it('counts reject as score >= threshold', () => {
    assert.equal(rejectRate([0.5, 0.4], 0.5), 0.5);
    const c = confusionMatrix(items, 0.5);
    assert.deepEqual([c.tp, c.fn, c.fp, c.tn], [3, 1, 1, 3]);
    assert.deepEqual(c.labels, ['good', 'dust', 'scratch']);
    assert.deepEqual(c.counts, [
      [3, 1],
      [0, 1],
      [1, 2],
    ]);
  });

  it('gives recall per defect class', () => {
    assert.deepEqual(recallPerClass(items, 0.5), {
      dust: { n: 1, rejected: 1, recall: 1 },
      scratch: { n: 3, rejected: 2, recall: 2 / 3 },
    });
  });

  it('sums it up', () => {
    const m = imageMetrics(items, 0.5);
    assert.deepEqual(m.n, { good: 4, defective: 4 });
    assert.equal(m.recall, 0.75);
    assert.equal(m.frr, 0.25);
    // Defective 0.9, 0.5, 0.4, 0.7 against good 0.1, 0.6, 0.2, 0.3: 4 + 3 + 3 + 4 wins of 16.
    assert.equal(m.auroc, 14 / 16);
  });
});

describe('pixel level', () => {
  it('labels 8-connected regions (diagonal neighbours are one region)', () => {
    // 1 0 0 0
    // 0 1 0 0
    // 0 0 0 1
    const r = labelRegions(Uint8Array.from([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]), 4, 3);
    // (0,0)-(1,1) touch diagonally: one region of 2; (3,2) is two columns away: a region of 1.
    assert.equal(r.count, 2);
    assert.deepEqual(r.sizes, [2, 1]);
    assert.deepEqual([...r.labels], [0, -1, -1, -1, -1, 0, -1, -1, -1, -1, -1, 1]);
  });

  it('pixel AUROC counts ties as 0.5', () => {
    const m = pixelMetrics([{ scores: [0.9, 0.1, 0.4, 0.4], mask: Uint8Array.from([1, 0, 0, 1]), width: 2, height: 2 }]);
    assert.equal(m.auroc, 3.5 / 4);
    assert.deepEqual([m.pixels, m.defectPixels, m.regions], [4, 2, 1]);
  });

  it('PRO integrates the mean region overlap up to FPR 0.3, normalised', () => {
    // Image A: region R1 = {0.9, 0.5} (2 px), good pixels 0.3, 0.1.
    // Image B: region R2 = {0.8} (1 px), good pixels 0.2, 0.6, 0.05.
    // Going down in score: 0.9 -> PRO 1/4; 0.8 -> 3/4; 0.6 -> FPR 1/5; 0.5 -> PRO 1; 0.3 -> FPR 2/5.
    // Area to FPR 0.3: 0.2 * 0.75 + 0.1 * 1 = 0.25, normalised by 0.3 = 5/6.
    const m = pixelMetrics([
      { scores: [0.9, 0.5, 0.3, 0.1], mask: Uint8Array.from([1, 1, 0, 0]), width: 4, height: 1 },
      { scores: [0.8, 0.2, 0.6, 0.05], mask: Uint8Array.from([1, 0, 0, 0]), width: 4, height: 1 },
    ]);
    close(m.pro, 5 / 6, 1e-9);
    assert.equal(m.regions, 2);
    // 0.9 and 0.8 beat all 5 good pixels, 0.5 beats 4: 14 of 15 pairs.
    close(m.auroc, 14 / 15, 1e-12);
    const last = m.proCurve[m.proCurve.length - 1]!;
    assert.deepEqual(last, { fpr: 0.3, pro: 1 });
  });

  it('agrees with the pairwise AUROC on random float32 maps', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 8 }), fc.boolean()), { minLength: 2, maxLength: 40 }), (px) => {
        const scores = px.map(([s]) => s / 8);
        const mask = Uint8Array.from(px.map(([, m]) => (m ? 1 : 0)));
        const pos = scores.filter((_, i) => mask[i]);
        const neg = scores.filter((_, i) => !mask[i]);
        const m = pixelMetrics([{ scores, mask, width: px.length, height: 1 }]);
        if (pos.length && neg.length) close(m.auroc, pairsAuroc(pos, neg), 1e-9);
        else assert.ok(Number.isNaN(m.auroc));
      }),
    );
  });

  it('upsamples a map between cell centres, clamped at the edges', () => {
    assert.deepEqual([...upsampleMap({ width: 2, height: 1, data: [0, 1] }, 4, 1)], [0, 0.25, 0.75, 1]);
    assert.deepEqual([...upsampleMap({ width: 1, height: 1, data: [3] }, 2, 2)], [3, 3, 3, 3]);
    // A map covering the right half only (a crop): the left half was never seen and gets the fill.
    const placed = upsampleMap({ width: 2, height: 1, data: [0, 1] }, 4, 1, {
      extent: { x: 2, y: 0, width: 2, height: 1 },
      valid: { x: 2, y: 0, width: 2, height: 1 },
      fill: -1,
    });
    assert.deepEqual([...placed], [-1, -1, 0, 1]);
  });
});

describe('plots', () => {
  it('bins both score sets on shared edges that include the threshold', () => {
    const h = histogram([0, 0.1, 0.2], [0.8, 1], 0.5, 4);
    assert.deepEqual(h.edges, [0, 0.25, 0.5, 0.75, 1]);
    assert.deepEqual(h.good, [3, 0, 0, 0]);
    assert.deepEqual(h.defective, [0, 0, 0, 2]);
    const svg = histogramSvg(h);
    assert.match(svg, /^<svg[^>]+xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /threshold 0.5/);
  });

  it('draws a curve as a path and escapes text', () => {
    const svg = curveSvg({ title: 'ROC <test>', xLabel: 'x', yLabel: 'y', points: [{ x: 0, y: 0 }, { x: 1, y: 1 }] });
    assert.match(svg, /<path d="M52 276L404 28"/);
    assert.match(svg, /ROC &lt;test&gt;/);
  });

  it('maps 0..1 to colours, clamped', () => {
    assert.deepEqual(colourMap(0), [20, 20, 120]);
    assert.deepEqual(colourMap(1), [220, 20, 20]);
    assert.deepEqual(colourMap(5), colourMap(1));
  });
});
