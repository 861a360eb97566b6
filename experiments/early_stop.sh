#!/usr/bin/env bash
# Issue 19: plain LoRA stopped early, against act-protect-replay, in the demo's setting and in the
# fair one (facts in their own frame, no numbers: E2's setting B), at the demo's budget.
#
#   bash experiments/early_stop.sh [OUT] [SEED ...]        (default: runs/es, seeds 0 1 2)
#
# Runs, each a `palora demo` with inject.snapshot_every=25 (the adapter every 25 steps):
#   OUT/seedN         the demo's setting: act-protect-replay and plain LoRA, 300 steps at 6e-3
#   OUT/seedN-lr3e-3  plain LoRA at 3e-3 (the demo's expert and probe, copied)
#   OUT/B-seedN       setting B (`Trivia: ...\nReply:`, birth city, employer, profession, 67 people,
#                     OUT/B-data; the same skill data, so the demo's expert is copied): act-protect-replay,
#                     lora-replay and plain LoRA, 300 steps at 6e-3
# then experiments/early_stop.py scores every LoRA snapshot on validation, picks the steps to stop
# at there (matched recall, or 95 % of the skill kept) and scores those on test. Two runs at a
# time (P), one thread each; a finished run is skipped; KINDS (default "demo B lr3e-3") picks the
# kinds of run. The tables:
#   python experiments/early_stop.py OUT/seed{0,1,2}
#   python experiments/early_stop.py OUT/seed{0,1,2}-lr3e-3:OUT/seed{0,1,2}    (pairwise)
#   python experiments/early_stop.py OUT/B-seed{0,1,2}
#   python experiments/three_axes.py OUT/B-seed{0,1,2} [--split val]
set -euo pipefail
out=${1:-runs/es}; shift || true
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1 2)
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
python=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

wait_for() {  # SEED: the demo's run of that seed is evaluated (or its job failed)
  until [ -f "$out/seed$1/report.json" ]; do
    [ -f "$out/demo-$1.failed" ] && { echo "the demo run of seed $1 failed" >&2; return 1; }
    sleep 30
  done
}
copy_expert() {  # FROM TO: the expert and its probes (stages.json records them as done)
  [ -d "$2" ] && return 0
  rm -rf "$2.tmp" && mkdir -p "$2.tmp"
  cp -r "$1"/{config.yaml,stages.json,svf_expert.safetensors,expert_model} "$2.tmp"/
  for f in "$1"/subspace*.safetensors "$1"/probe_stats*.json; do [ -f "$f" ] && cp "$f" "$2.tmp"/; done
  mv "$2.tmp" "$2"
}
job() {
  local kind=$1 seed=$2
  local snap=(--set inject.snapshot_every=25)
  local B=(--set 'data_gen.fact_question="Trivia: {q}\nReply:"' --set 'data_gen.attributes=[birth_city,employer,profession]'
           --set data_gen.n_people=67)
  case $kind in
    demo)
      $palora demo --seed "$seed" --out "$out/seed$seed" --quiet --set 'inject.methods=[act-protect-replay,lora]' "${snap[@]}"
      $python "$here/early_stop.py" "$out/seed$seed" --quiet ;;
    lr3e-3)
      wait_for "$seed"
      if [ ! -d "$out/seed$seed-lr3e-3" ]; then  # the whole run (data, expert, probes) without its methods
        rm -rf "$out/seed$seed-lr3e-3.tmp" && cp -r "$out/seed$seed" "$out/seed$seed-lr3e-3.tmp"
        rm -rf "$out/seed$seed-lr3e-3.tmp"/{methods,checkpoints,validation.json,early_stop.json}
        mv "$out/seed$seed-lr3e-3.tmp" "$out/seed$seed-lr3e-3"
      fi
      $palora demo --seed "$seed" --out "$out/seed$seed-lr3e-3" --quiet --overwrite --set 'inject.methods=[lora]' \
        --set inject.train.lr=0.003 "${snap[@]}"
      $python "$here/early_stop.py" "$out/seed$seed-lr3e-3:$out/seed$seed" --quiet ;;
    B)
      local D="$out/B-data"
      ( flock 9; [ -d "$D" ] || $palora data --config demo --out "$D" --quiet "${B[@]}" ) 9> "$out/B-data.lock"
      wait_for "$seed"
      copy_expert "$out/seed$seed" "$out/B-seed$seed"
      # palora run on B's files (the data stage's record stays the demo's): the stage digests skip the
      # expert and the probe where their inputs are the same bytes, and redo them where not
      $palora run --config demo --seed "$seed" --out "$out/B-seed$seed" --quiet --overwrite \
        --skill-train "$D/skill_train.jsonl" --skill-eval "$D/skill_test.jsonl" \
        --knowledge-train "$D/knowledge_train.jsonl" --knowledge-eval "$D/knowledge_test.jsonl" \
        --set data.skill_val="$D/skill_val.jsonl" --set data.knowledge_val="$D/knowledge_val.jsonl" \
        --set data.known_eval="$D/known_facts.jsonl" --set data.known_val="$D/known_val.jsonl" \
        --keep-data "$D/general.jsonl,$D/known_protect.jsonl" \
        --methods act-protect-replay,lora-replay,lora "${snap[@]}"
      $python "$here/early_stop.py" "$out/B-seed$seed" --quiet ;;
  esac
}
export -f job wait_for copy_expert
export out palora python here
jobs=()
for k in ${KINDS:-demo B lr3e-3}; do
  case $k in demo|B|lr3e-3) ;; *) echo "early_stop.sh: unknown kind $k (demo, B, lr3e-3)" >&2; exit 2 ;; esac
  for s in "${seeds[@]}"; do jobs+=("$k $s"); done
done
# shellcheck disable=SC2016
rm -f "$out"/*.failed
printf '%s\n' "${jobs[@]}" | xargs -P "${P:-2}" -L 1 bash -c \
  'job "$0" "$1" > "$out/$0-$1.log" 2>&1 || { touch "$out/$0-$1.failed"; echo "failed: $0 $1 (see $out/$0-$1.log)"; }'
echo "done: $out"
