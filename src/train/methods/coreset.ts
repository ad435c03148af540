// Greedy k-center coreset selection (PatchCore): repeatedly take the point farthest from the
// points taken so far, so a small memory bank still covers the rare patterns (edges, corners)
// that random subsampling would drop. Distances are computed on a random projection to a few
// dimensions (as PatchCore does) to keep the O(N * K) loop affordable in plain TypeScript.
import { gaussian, rng } from './linear.js';

/**
 * Indices of `k` rows of X [n, d] chosen by greedy k-center, deterministic for `seed`.
 * `projDims` (default 32) is the dimension of the random projection used for distances.
 */
export function kCenterCoreset(X: Float32Array, n: number, d: number, k: number, seed: number, projDims = 32): number[] {
  if (k >= n) return Array.from({ length: n }, (_, i) => i);
  const r = rng(seed);
  const p = Math.min(projDims, d);
  let Y: Float32Array;
  if (p === d) Y = X;
  else {
    const P = gaussian(d * p, r);
    Y = new Float32Array(n * p);
    for (let i = 0; i < n; i++) {
      const xo = i * d;
      const yo = i * p;
      for (let j = 0; j < d; j++) {
        const v = X[xo + j]!;
        if (v === 0) continue;
        const po = j * p;
        for (let q = 0; q < p; q++) Y[yo + q]! += v * P[po + q]!;
      }
    }
  }
  const minDist = new Float32Array(n).fill(Infinity);
  const selected: number[] = [];
  let current = Math.floor(r() * n);
  for (let it = 0; it < k; it++) {
    selected.push(current);
    const co = current * p;
    let best = -1;
    let bestI = 0;
    for (let i = 0; i < n; i++) {
      const io = i * p;
      let s = 0;
      for (let q = 0; q < p; q++) {
        const t = Y[io + q]! - Y[co + q]!;
        s += t * t;
      }
      if (s < minDist[i]!) minDist[i] = s;
      if (minDist[i]! > best) {
        best = minDist[i]!;
        bestI = i;
      }
    }
    if (best <= 0) break; // every point is already in the bank
    current = bestI;
  }
  return selected;
}
