#!/usr/bin/env bash
# Issue 19, sequential rounds: does round one's recall survive round two when round one's fact
# lines join the kept data (protected by the projection and replayed), as the skill's and the old
# knowledge's are?
#
#   bash experiments/rounds.sh R1 [OUT] [STEPS]     (default OUT runs/rounds, STEPS 400)
#
# R1 is a finished run of experiments/long.sh with an act-protect-replay adapter (round one). Round
# two's facts are 50 other people (`palora data --set data_gen.seed=1`; only its knowledge files
# are read). Two arms, each a copy of R1 (data, expert) that starts from the expert with round
# one's adapter merged (inject.protect_adapter, protect_adapter_side=none) and trains
# act-protect-replay on round two's facts, STEPS steps:
#   OUT/keep    probe.keep_data = R1's general text, known-fact protect split AND round one's
#               fact lines (knowledge_train.jsonl): round one's inputs protected and replayed
#   OUT/plain   probe.keep_data as in R1 (general text, protect split): round one unprotected
# Each arm is evaluated twice on the test splits: with data.known_eval = round one's fact
# questions (report-round1.json: round one's recall after round two), then with the held-out
# known facts (report.json: old knowledge). Round one's recall before round two is R1's own
# report.json (act-protect-replay's knowledge_recall). The arms run at once, one thread each.
# ARMS (default "keep plain") may also name keep-r50: keep with inject.replay_share=0.5, so that
# more of round one's lines are replayed (at 0.25 about 230 of its 1,000 lines are drawn). Each
# arm is also evaluated on the validation splits first (report-val.json: round two's and the
# skill's validation questions, round one's validation questions as data.known_eval), where the
# arms are compared before their test files are read.
set -euo pipefail
r1=${1:?usage: rounds.sh R1 [OUT] [STEPS]}; out=${2:-runs/rounds}; steps=${3:-400}
palora=${PALORA:-palora}  # a command, possibly with arguments: left unquoted on purpose
adapter="$r1/methods/act-protect-replay/adapter"
[ -d "$adapter" ] || { echo "rounds.sh: $adapter is missing: R1 must be a finished act-protect-replay run" >&2; exit 2; }
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -f "$out/facts2/knowledge_test.jsonl" ] || $palora data --config demo --out "$out/facts2" --set data_gen.seed=1 --quiet
arm() {  # NAME KEEP_FILES [ARGS...]: ARGS go to palora inject
  local dir="$out/$1" keep=$2; shift 2
  [ -d "$dir" ] || { cp -r "$r1" "$dir" && rm -rf "$dir/methods" "$dir"/validation.json "$dir"/early_stop.json \
                       "$dir/evaluations"; }
  $palora probe --out "$dir" --methods act-protect-replay --keep-data "$keep" --quiet --overwrite
  $palora inject --out "$dir" --methods act-protect-replay --knowledge-train "$out/facts2/knowledge_train.jsonl" \
    --set inject.train.steps="$steps" --set inject.protect_adapter="$adapter" \
    --set inject.protect_adapter_side=none --set inject.snapshot_every=null --quiet --overwrite "$@"
  $palora eval --out "$dir" --knowledge-eval "$out/facts2/knowledge_val.jsonl" --skill-eval "$r1/data/skill_val.jsonl" \
    --set data.known_eval="$r1/data/knowledge_val.jsonl" --quiet --overwrite
  cp "$dir/report.json" "$dir/report-val.json"
  $palora eval --out "$dir" --knowledge-eval "$out/facts2/knowledge_test.jsonl" --skill-eval "$r1/data/skill_test.jsonl" \
    --set data.known_eval="$r1/data/knowledge_test.jsonl" --quiet --overwrite
  cp "$dir/report.json" "$dir/report-round1.json"
  $palora eval --out "$dir" --knowledge-eval "$out/facts2/knowledge_test.jsonl" --skill-eval "$r1/data/skill_test.jsonl" \
    --set data.known_eval="$r1/data/known_facts.jsonl" --quiet --overwrite
}
d="$r1/data"
plain="$d/general.jsonl,$d/known_protect.jsonl"; keep="$plain,$d/knowledge_train.jsonl"  # + round one's lines
for a in ${ARMS:-keep plain}; do
  case $a in
    keep) arm keep "$keep" > "$out/keep.log" 2>&1 & ;;
    keep-r50) arm keep-r50 "$keep" --set inject.replay_share=0.5 > "$out/keep-r50.log" 2>&1 & ;;
    plain) arm plain "$plain" > "$out/plain.log" 2>&1 & ;;
    *) echo "rounds.sh: unknown arm $a (keep, keep-r50, plain)" >&2; exit 2 ;;
  esac
done
wait
echo "done: $out"
