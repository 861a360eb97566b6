# Sourced by experiments/gemma.sh and experiments/regime.sh: one seed's runs.
#
#   one SEED
#
# Needs `run OUT_DIR SEED ARGS...` (the script's `palora run` on its data) and $out, $methods, $lines.
# OUT/seedN: the SVF expert and the methods of $methods (a comma list; empty: the expert exists) at
# lr 3e-3. Then each METHOD@RATE of $lines on a copy of that expert, into OUT/seedN-METHODRATE
# (stages.json records the expert as done, so only the method's stages run).
one() {
  local seed=$1 line method rate dir
  if [ -n "$methods" ]; then run "$out/seed$seed" "$seed" --methods "$methods" --set inject.train.lr=0.003 || return 1; fi
  for line in $lines; do
    method=${line%@*} rate=${line#*@} dir="$out/seed$seed-${line/@/}"
    if [ ! -d "$dir" ]; then
      mkdir -p "$dir.tmp"
      cp -r "$out/seed$seed"/{config.yaml,stages.json,svf_expert.safetensors,expert_model} "$dir.tmp"/
      mv "$dir.tmp" "$dir"
    fi
    run "$dir" "$seed" --methods "$method" --set inject.train.lr="$rate" || return 1
  done
}
