// Small numeric helpers for the methods: a seeded RNG, feature standardisation and L2-regularised
// logistic regression (Adam, mini-batches, deterministic for a seed). Plain TypeScript: the
// problems are small (tens of thousands of rows, hundreds of features).

/** mulberry32: a small, fast, seedable PRNG giving floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffleInPlace<T>(a: T[] | Int32Array, r: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
}

/** Standard normal samples (Box-Muller). */
export function gaussian(n: number, r: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    const m = Math.sqrt(-2 * Math.log(u));
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Per-column mean and standard deviation of X [n, d] (std floored at eps). */
export function columnStats(X: Float32Array, n: number, d: number, eps = 1e-6): { mean: Float32Array; std: Float32Array } {
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) {
      const v = X[o + j]!;
      mean[j]! += v;
      sq[j]! += v * v;
    }
  }
  const m = new Float32Array(d);
  const s = new Float32Array(d);
  for (let j = 0; j < d; j++) {
    m[j] = mean[j]! / n;
    s[j] = Math.max(eps, Math.sqrt(Math.max(0, sq[j]! / n - m[j]! ** 2)));
  }
  return { mean: m, std: s };
}

export interface LogisticOptions {
  /** L2 penalty on the weights (not the bias), per sample: loss = mean(w_i * ce_i) + l2/2 |w|^2. */
  l2: number;
  epochs: number;
  batch?: number;
  lr?: number;
  seed: number;
  /** Per-row weights (default 1); use them to balance classes. */
  weights?: Float32Array;
}

/**
 * Logistic regression on standardised features: X [n, d], targets y in [0, 1] (soft labels allowed).
 * Returns w [d] and b for logit = X·w + b.
 */
export function trainLogistic(X: Float32Array, y: Float32Array, n: number, d: number, opts: LogisticOptions): { w: Float32Array; b: number } {
  const r = rng(opts.seed);
  const batch = opts.batch ?? 256;
  const lr = opts.lr ?? 0.01;
  const w = new Float64Array(d);
  let b = 0;
  const mw = new Float64Array(d);
  const vw = new Float64Array(d);
  let mb = 0;
  let vb = 0;
  const b1 = 0.9;
  const b2 = 0.999;
  let t = 0;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let wsum = 0;
  for (let i = 0; i < n; i++) wsum += opts.weights ? opts.weights[i]! : 1;
  const wnorm = n / wsum;
  const g = new Float64Array(d);
  for (let ep = 0; ep < opts.epochs; ep++) {
    shuffleInPlace(order, r);
    // Step size decays linearly to a tenth over the run (stable final weights).
    const lrEp = lr * (1 - (0.9 * ep) / Math.max(1, opts.epochs));
    for (let s = 0; s < n; s += batch) {
      const e = Math.min(n, s + batch);
      g.fill(0);
      let gb = 0;
      for (let k = s; k < e; k++) {
        const i = order[k]!;
        const o = i * d;
        let z = b;
        for (let j = 0; j < d; j++) z += X[o + j]! * w[j]!;
        const p = 1 / (1 + Math.exp(-z));
        const err = (p - y[i]!) * (opts.weights ? opts.weights[i]! * wnorm : 1);
        for (let j = 0; j < d; j++) g[j]! += err * X[o + j]!;
        gb += err;
      }
      const m = e - s;
      t++;
      const c1 = 1 - b1 ** t;
      const c2 = 1 - b2 ** t;
      for (let j = 0; j < d; j++) {
        const gj = g[j]! / m + opts.l2 * w[j]!;
        mw[j] = b1 * mw[j]! + (1 - b1) * gj;
        vw[j] = b2 * vw[j]! + (1 - b2) * gj * gj;
        w[j]! -= (lrEp * (mw[j]! / c1)) / (Math.sqrt(vw[j]! / c2) + 1e-8);
      }
      const gbm = gb / m;
      mb = b1 * mb + (1 - b1) * gbm;
      vb = b2 * vb + (1 - b2) * gbm * gbm;
      b -= (lrEp * (mb / c1)) / (Math.sqrt(vb / c2) + 1e-8);
    }
  }
  return { w: Float32Array.from(w), b };
}
