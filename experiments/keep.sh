#!/usr/bin/env bash
# Issue 19, old knowledge as a protected set: the demo's setting on the three axes (skill
# retention, new-fact recall, held-out known facts), with the practical baselines.
#
#   bash experiments/keep.sh [OUT] [SEED ...]      (default: runs/keep, seeds 0 1 2)
#
# Each seed runs `palora demo` (the same data and general text, since the demo's data_gen.seed is 0;
# its own SVF expert) with act-protect (the skill, general text and the protect split of known facts in one
# budget, configs/demo.yaml), plain LoRA and lora-replay (a quarter of the lines replayed from the
# same general text and protect split), then plain LoRA stopped early (50 of the 150 steps, the
# same rate) on a copy of that run: the expert is reused, only inject:lora and eval run again.
# The seeds run at once, one thread each.
set -euo pipefail
out=${1:-runs/keep}; shift || true
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1 2)
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
mkdir -p "$out"
one() {
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  $palora demo --seed "$1" --out "$out/seed$1" --quiet --overwrite --set 'inject.methods=[act-protect,lora,lora-replay]'
  if [ ! -d "$out/seed$1-early" ]; then  # the data, the expert and the probe; not the adapters
    cp -r "$out/seed$1" "$out/seed$1-early" && rm -rf "$out/seed$1-early/methods"
  fi
  $palora demo --seed "$1" --out "$out/seed$1-early" --quiet --overwrite \
    --set 'inject.methods=[lora]' --set inject.train.steps=50
}
for s in "${seeds[@]}"; do
  one "$s" > "$out/seed$s.log" 2>&1 &
done
wait
echo "done: $out"
