#!/usr/bin/env bash
# E3, the paper's regime: a skill the base model already partly has, facts in their own frame.
#
#   bash experiments/regime.sh [OUT] [SEED ...]      (default: runs/e3, seeds 0 1 2)
#
# `python experiments/regime.py` measured the base on every named task in three prompt forms; on
# SmolLM2-135M-Instruct chain_sum_2 (two 1-2 digit terms, + and -) three-shot is one it partly has
# (36 ± 5 % on 100 validation questions drawn beside 3 training items; on this script's test
# split, which excludes all 2,000 training questions and with them most small sums, 15.4 %).
# The skill files put the same three solved training items in front of every prompt
# (`regime.py --shots 3`); the facts are E2's setting B (`Trivia: …\nReply:`, no birth years,
# 67 people), so skill and facts share neither a frame nor an answer format.
# Each seed trains its own SVF expert at the demo's settings, then runs lora, palora (the paper's
# probe) and act-protect at 150 steps and lr 3e-3 (the demo's budget when E3 was measured, pinned
# since the demo moved to 300 steps at 6e-3); report.json has base, expert and each method.
# The seeds run at once, one thread each (on two cores, three seeds at once end sooner than two
# then one). METHODS (a comma list; default lora,palora,act-protect) runs fewer methods in
# OUT/seedN (METHODS= none: the experts exist). LINES (default none) names runs on a copy of
# the seed's expert, one METHOD@RATE each, into OUT/seedN-METHODRATE: e.g. LINES="lora@1e-3"
# gives plain LoRA's rate line (LINE_SETS, LINE_TAG: experiments/seed_runs.sh), read by
#   python experiments/verdict.py --setting "E3=OUT/seed0,OUT/seed1,OUT/seed2" \
#       --line "E3=OUT/seed{seed}-lora1e-3"
set -euo pipefail
out=${1:-runs/e3}; shift || true
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1 2)
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
python=${PYTHON:-python}
mkdir -p "$out"
[ -d "$out/data-cs" ] || $palora data --config demo --out "$out/data-cs" --quiet \
  --set data_gen.skill_task=chain_sum_2 --set 'data_gen.fact_question="Trivia: {q}\nReply:"' \
  --set 'data_gen.attributes=[birth_city,employer,profession]' --set data_gen.n_people=67
[ -d "$out/data-cs3" ] || $python experiments/regime.py --shots 3 --data "$out/data-cs" --out "$out/data-cs3"
data="$out/data-cs3"
methods=${METHODS-lora,palora,act-protect}; lines=${LINES-}
run() {  # OUT_DIR SEED ARGS...: palora run on E3's files, 150 steps (a finished stage is kept)
  local dir=$1 seed=$2; shift 2
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $palora run --config demo --seed "$seed" --out "$dir" --quiet --overwrite \
    --skill-train "$data/skill_train.jsonl" --skill-eval "$data/skill_test.jsonl" \
    --knowledge-train "$data/knowledge_train.jsonl" --knowledge-eval "$data/knowledge_test.jsonl" \
    --set data.known_eval="$data/known_facts.jsonl" --set inject.train.steps=150 "$@"
}
# shellcheck source=experiments/seed_runs.sh
source "$(dirname "$0")/seed_runs.sh"  # one SEED
for seed in "${seeds[@]}"; do
  { if one "$seed" > "$out/seed$seed.log" 2>&1; then echo "$out/seed$seed: done"; else echo "failed: seed $seed (see $out/seed$seed.log)"; fi; } &
done
wait
