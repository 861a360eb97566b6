#!/usr/bin/env bash
# Issue 19, a demo-sized setting: act-protect-replay at fewer steps and a higher rate, so that
# `make run` fits its 15 minutes; chosen on the validation splits like the 400-step result.
#
#   STEPS=200 LR=0.006 bash experiments/short.sh FROM OUT [SEED ...]   (default seeds 0 1 2)
#
# FROM is an earlier experiments/long.sh folder (FROM/seedN holds the data, the SVF expert and the
# probe of seed N); each seed's run is a copy of it without its methods, then `palora demo` with
# inject.methods=[METHODS] (default act-protect-replay), STEPS steps at rate LR, then
# experiments/validate.py. The seeds run at once, one thread each. Choose on validation
# (three_axes.py --split val), then read the test table.
set -euo pipefail
from=$1 out=$2; shift 2
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1 2)
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
python=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)
steps=${STEPS:-200} lr=${LR:-0.006} methods=${METHODS:-act-protect-replay}
mkdir -p "$out"
one() {
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  local dir="$out/seed$1"
  [ -d "$dir" ] || { cp -r "$from/seed$1" "$dir" && rm -rf "$dir/methods" "$dir/validation.json"; }
  $palora demo --seed "$1" --out "$dir" --quiet --overwrite --set "inject.methods=[$methods]" \
    --set inject.train.steps="$steps" --set inject.train.lr="$lr"
  $python "$here/validate.py" "$dir" --quiet
}
for s in "${seeds[@]}"; do
  one "$s" > "$out/seed$s.log" 2>&1 &
done
wait
echo "done: $out"
