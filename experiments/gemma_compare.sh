#!/usr/bin/env bash
# Issue 18, the second model's comparison-only baselines: CorDA in its knowledge-preserved mode
# (it rewrites the base weights, so it runs in `palora compare`, not `palora run`) on the SVF
# experts that experiments/gemma.sh trained, in the same setting B and budget (150 steps, rank 16).
#
#   bash experiments/gemma_compare.sh [GEMMA_OUT] [OUT] [SEED ...]   (default: runs/gemma runs/gemma-compare 0 1)
#
# Each seed's expert is reused from GEMMA_OUT/seedN (its weights and its svf stage record); the
# comparison refuses it if its SVF settings differ. The first seed tries every rate of GRID on
# the validation splits and the comparison chooses one there (compare.select: balanced); the
# other seeds run at that rate, on test. METHODS (default svf,corda-kpm: svf is the expert's own
# row, for retention) and GRID (default [0.0003,0.0001], the two lowest of the comparison's
# svd-init grid: on SmolLM2 CorDA kept 0 and 4.7 % of the skill at 3e-3 and 1e-3) may be set. Then
# OUT/compare.md has the table.
set -euo pipefail
src=${1:-runs/gemma}; out=${2:-runs/gemma-compare}; shift 2 || shift $#
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1)
palora=${PALORA:-palora}; python=${PYTHON:-python}  # commands, possibly with arguments: left unquoted on purpose
methods=${METHODS:-svf,corda-kpm}; grid=${GRID:-[0.0003,0.0001]}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for s in "${seeds[@]}"; do
  [ -d "$src/seed$s/expert_model" ] || { echo "no expert in $src/seed$s: run experiments/gemma.sh first" >&2; exit 1; }
  [ -d "$out/seed$s" ] && continue
  mkdir -p "$out/seed$s.tmp"
  cp -r "$src/seed$s"/{config.yaml,svf_expert.safetensors,expert_model} "$out/seed$s.tmp"/
  $python - "$src/seed$s/stages.json" "$out/seed$s.tmp/stages.json" <<'EOF'
import json, sys
stages = json.load(open(sys.argv[1]))
json.dump({"svf": stages["svf"]}, open(sys.argv[2], "w"), indent=2)
EOF
  mv "$out/seed$s.tmp" "$out/seed$s"
done
seed_list=$(IFS=,; echo "${seeds[*]}")
# the first expert's own configuration (model, data, SVF, 150 steps): the experts' settings by construction
$palora compare --config "$src/seed${seeds[0]}/config.yaml" --out "$out" --methods "$methods" --quiet \
  --set "compare.seeds=[$seed_list]" --set "compare.svd_init_lr_grid=$grid" \
  --set 'compare.budget_methods=[]' --set 'compare.budget_seeds=[]'
echo "done: $out/compare.md"
