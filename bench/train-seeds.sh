#!/usr/bin/env bash
# The same training config on several split seeds: how much a model's held-out figures depend on
# which parts land in the test split (docs/training.md, "models/magnetic-tile").
#
#   bench/train-seeds.sh train/tile.yaml 1 2 3 4 5
#
# Each seed trains a copy of the config (only `seed:`, `output.dir:` and `runDir:` changed) into
# a temporary folder, so the bundled model is left alone; prints val and test AUROC, recall and
# FRR per seed, then the means. Sequential: one training at a time (each uses both cores).
set -euo pipefail
cfg=${1:?usage: bench/train-seeds.sh CONFIG.yaml SEED...}
shift
[ $# -gt 0 ] || { echo "usage: bench/train-seeds.sh CONFIG.yaml SEED..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(cd "$(dirname "$cfg")" && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/linesight-seeds-XXXXXX")
echo "runs and bundles under $out" >&2
results=()
for seed in "$@"; do
  [[ $seed =~ ^[0-9]+$ ]] || { echo "seed '$seed' is not a whole number" >&2; exit 2; }
  # The copy sits beside the original, so its relative dataset path still resolves.
  copy="$dir/.seeds-$seed-$$.yaml"
  trap 'rm -f "$copy"' EXIT
  sed -E -e "s#^seed:.*#seed: $seed#" -e "s#^(  dir: )\.\./models/.*#\1$out/bundle-$seed#" -e "s#^runDir:.*#runDir: $out/runs#" "$cfg" > "$copy"
  grep -q "^seed: $seed" "$copy" || { echo "$cfg has no top-level 'seed:' line to change" >&2; exit 2; }
  log="$out/seed-$seed.log"
  (cd "$root" && node --import tsx src/cli.ts train -c "$copy") > "$log" 2>&1 || { echo "seed $seed: training failed, see $log" >&2; exit 1; }
  rm -f "$copy"
  run=$(sed -n -E 's/^run +([^ ]+).*/\1/p' "$log" | head -1)
  results+=("$out/runs/$run/report.json")
  node -e '
    const m = require(process.argv[1]).metrics;
    const f = (x) => x.toFixed(4);
    console.log(`seed ${process.argv[2]}: val AUROC ${f(m.val.auroc)}  test AUROC ${f(m.test.auroc)}  recall ${(100 * m.test.recall).toFixed(1)} %  FRR ${(100 * m.test.frr).toFixed(1)} %`);
  ' "$out/runs/$run/report.json" "$seed"
done
node -e '
  const ms = process.argv.slice(1).map((f) => require(f).metrics);
  const mean = (g) => (ms.reduce((a, m) => a + g(m), 0) / ms.length).toFixed(4);
  const tests = ms.map((m) => m.test.auroc);
  console.log(`mean of ${ms.length}: val AUROC ${mean((m) => m.val.auroc)}  test AUROC ${mean((m) => m.test.auroc)} (${Math.min(...tests).toFixed(3)}-${Math.max(...tests).toFixed(3)})`);
' "${results[@]}"
