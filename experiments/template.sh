#!/usr/bin/env bash
# E2, the template confound: is plain LoRA's forgetting the facts' answer format taking over the
# skill's prompts, and does act-protect's win over the paper's probe survive facts that share
# neither the skill's frame nor its numeric answers?
#
#   bash experiments/template.sh EXPERT_SEED0 EXPERT_SEED1 [OUT]
#
# EXPERT_SEEDk: a run directory holding an SVF expert of the demo's settings trained with seed k
# (`palora demo --seed k`, or `palora svf --config demo --seed k`), on the demo's skill data.
# Setting A: the demo's facts (`Question: …\nAnswer:`, a quarter of the answers birth years).
# Setting B: `Trivia: …\nReply:` and no birth years (`data_gen.attributes` without birth_year,
# 67 people: about as many facts and training lines as A). The skill files are the same bytes.
# Each (setting, seed) runs lora, palora (the paper's probe) and act-protect from the same expert
# at 150 steps and lr 3e-3 (the demo's budget when B was measured; the demo has since moved to 300
# steps at 6e-3, so the budget is pinned here); report.md holds the wrong skill answers by kind.
set -euo pipefail
seed0=${1:?usage: template.sh EXPERT_SEED0 EXPERT_SEED1 [OUT]} seed1=${2:?usage: template.sh EXPERT_SEED0 EXPERT_SEED1 [OUT]}
out=${3:-runs/e2}
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
mkdir -p "$out"
[ -d "$out/data-A" ] || $palora data --config demo --out "$out/data-A" --quiet
[ -d "$out/data-B" ] || $palora data --config demo --out "$out/data-B" --quiet \
  --set 'data_gen.fact_question="Trivia: {q}\nReply:"' \
  --set 'data_gen.attributes=[birth_city,employer,profession]' --set data_gen.n_people=67
same() { cmp -s "$1" "$2" || { echo "template.sh: $1 and $2 differ: the experts would be retrained" >&2; exit 1; }; }
for split in train val test; do same "$out/data-A/skill_$split.jsonl" "$out/data-B/skill_$split.jsonl"; done
for seed in 0 1; do
  expert=$([ "$seed" = 0 ] && echo "$seed0" || echo "$seed1")
  for setting in B A; do
    run="$out/$setting-seed$seed" data="$out/data-$setting"
    # the expert is reused (its svf stage matches: the same skill_train bytes), every later stage redone
    same "$data/skill_train.jsonl" "$(sed -n 's/^  skill_train: //p' "$expert/config.yaml")"
    if [ ! -d "$run" ]; then
      rm -rf "$run.tmp" && mkdir -p "$run.tmp"
      cp -r "$expert"/{config.yaml,stages.json,svf_expert.safetensors,expert_model} "$run.tmp"/
      # the expert's probes too, where it has them: stages.json records them as done
      for f in "$expert"/subspace*.safetensors "$expert"/probe_stats*.json; do [ -f "$f" ] && cp "$f" "$run.tmp"/; done
      # on the expert's own facts its methods are reused where their settings match (the demo's rows)
      if [ "$setting" = A ] && [ -d "$expert/methods" ]; then cp -r "$expert/methods" "$run.tmp"/; fi
      mv "$run.tmp" "$run"
    fi
    $palora run --config demo --seed "$seed" --out "$run" --overwrite --quiet \
      --skill-train "$data/skill_train.jsonl" --skill-eval "$data/skill_test.jsonl" \
      --knowledge-train "$data/knowledge_train.jsonl" --knowledge-eval "$data/knowledge_test.jsonl" \
      --set data.known_eval="$data/known_facts.jsonl" --methods lora,palora,act-protect \
      --set inject.train.steps=150 --set inject.train.lr=0.003 > /dev/null  # the budget B was measured at
    echo "$run: done"
  done
done
