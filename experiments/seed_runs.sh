# Sourced by experiments/gemma.sh and experiments/regime.sh: one seed's runs.
#
#   one SEED
#
# Needs `run OUT_DIR SEED ARGS...` (the script's `palora run` on its data) and $out, $methods, $lines.
# OUT/seedN: the SVF expert and the methods of $methods (a comma list; empty: the expert exists) at
# lr 3e-3. Then each METHOD@RATE of $lines on a copy of that expert, into OUT/seedN-METHODRATE
# (stages.json records the expert as done, so only the method's stages run). LINE_SETS (KEY=VALUE
# settings separated by spaces, e.g. "probe.rule=global") is passed to every line run with --set,
# and LINE_TAG (e.g. -global) ends the names of their folders: OUT/seedN-METHODRATE-global.
one() {
  local seed=$1 line method rate dir kv
  local -a sets=()
  for kv in ${LINE_SETS:-}; do sets+=(--set "$kv"); done
  if [ -n "$methods" ]; then run "$out/seed$seed" "$seed" --methods "$methods" --set inject.train.lr=0.003 || return 1; fi
  for line in $lines; do
    method=${line%@*} rate=${line#*@} dir="$out/seed$seed-${line/@/}${LINE_TAG:-}"
    if [ ! -d "$dir" ]; then
      mkdir -p "$dir.tmp"
      cp -r "$out/seed$seed"/{config.yaml,stages.json,svf_expert.safetensors,expert_model} "$dir.tmp"/
      mv "$dir.tmp" "$dir"
    fi
    run "$dir" "$seed" --methods "$method" --set inject.train.lr="$rate" "${sets[@]}" || return 1
  done
}
