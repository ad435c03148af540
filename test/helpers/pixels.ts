// Comparing images sample by sample (decoders and resizes against sharp).
import assert from 'node:assert/strict';

/** Mean and max absolute difference of two equally long sample arrays. */
export function diff(a: Uint8Array, b: Uint8Array): { mean: number; max: number } {
  assert.equal(a.length, b.length, 'same number of samples');
  let sum = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    sum += d;
    if (d > max) max = d;
  }
  return { mean: sum / a.length, max };
}
