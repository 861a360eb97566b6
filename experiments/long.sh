#!/usr/bin/env bash
# Issue 19, learning the facts (recall >= 80 %) while keeping the skill and old knowledge: act-protect
# trained twice as long (300 steps), with replay, against plain LoRA at the same steps (about the same
# recall); settings chosen on the validation splits (experiments/validate.py), reported on test.
#
#   bash experiments/long.sh [OUT] [SEED ...]      (default: runs/long, seeds 0 1 2)
#   VARIANTS=replay bash experiments/long.sh runs/long 0     (one variant, one seed)
#   STEPS=400 METHODS=act-protect-replay,lora-replay VARIANTS= bash experiments/long.sh runs/long400
#                                                              (other steps and methods, no variant)
#
# Per seed, runs of `palora demo` that share the data, the SVF expert and the probe (copied, so
# only the injection and the evaluation run again; a finished run is skipped):
#   seedN          METHODS (default act-protect-replay with replay_share 0.25, and plain LoRA),
#                  STEPS steps (default 300) at lr 3e-3
#   seedN-r50      act-protect-replay, replay_share 0.5, STEPS steps      (VARIANTS has r50)
#   seedN-replay   lora-replay (replay_share 0.25), STEPS steps            (VARIANTS has replay)
#   seedN-lora-S   plain LoRA, S = SHORT_STEPS steps (default 250): LoRA near the protected
#                  method's recall, its own schedule                       (VARIANTS has lora-short)
# then experiments/validate.py scores each on the validation splits. The seeds run at once, one
# thread each. Choose on validation (three_axes.py --split val), then read the test table.
set -euo pipefail
out=${1:-runs/long}; shift || true
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1 2)
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
python=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)
steps=${STEPS:-300}
methods=${METHODS:-act-protect-replay,lora}
variants=${VARIANTS-r50 replay}  # set but empty: no variant
mkdir -p "$out"
variant() {  # SEED NAME ARGS...: a copy of the seed's run (data, expert, probe), then palora demo ARGS
  local seed=$1 name=$2; shift 2
  local dir="$out/seed$seed-$name"
  [ -d "$dir" ] || { cp -r "$out/seed$seed" "$dir" && rm -rf "$dir/methods" "$dir/validation.json"; }
  $palora demo --seed "$seed" --out "$dir" --quiet --overwrite "$@"
  $python "$here/validate.py" "$dir" --quiet
}
one() {
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  $palora demo --seed "$1" --out "$out/seed$1" --quiet --overwrite \
    --set "inject.methods=[$methods]" --set inject.train.steps="$steps"
  $python "$here/validate.py" "$out/seed$1" --quiet
  case " $variants " in *" r50 "*)
    variant "$1" r50 --set 'inject.methods=[act-protect-replay]' --set inject.train.steps="$steps" \
      --set inject.replay_share=0.5 ;;
  esac
  case " $variants " in *" replay "*)
    variant "$1" replay --set 'inject.methods=[lora-replay]' --set inject.train.steps="$steps" ;;
  esac
  case " $variants " in *" lora-short "*)
    variant "$1" "lora-${SHORT_STEPS:-250}" --set 'inject.methods=[lora]' --set inject.train.steps="${SHORT_STEPS:-250}" ;;
  esac
}
for s in "${seeds[@]}"; do
  one "$s" > "$out/seed$s.log" 2>&1 &
done
wait
echo "done: $out"
