#!/usr/bin/env bash
# One distillation run and its evaluation in one call (a lent GPU node or a CPU):
# train RECIPE (resuming from OUT's checkpoint when there is one), register the result
# in a scratch model zoo under OUT (the repository's weights/ untouched), evaluate it
# against the registered maxidetect-distill on held-out simulated and real frames, and
# measure its raw class fractions on the real frames. Everything lands in OUT.
#
#   benchmarks/training/run_and_evaluate.sh RECIPE OUT [MAX_SECONDS] [WORKERS]
#
# On a GPU node: KERAS_BACKEND=jax and WORKERS ~ CPU cores - 2 (the teacher runs on the
# device, workers simulate frames); MAX_SECONDS stops training checkpointed, leaving
# time for the evaluation (~3 min on a GPU node, ~5 on 2 CPU cores). STEPS=N overrides
# the recipe's step count (a smoke test). Run from the repository root (recipes name
# the real frames relative to it).
set -euo pipefail
recipe=${1:?recipe}; out=${2:?output folder}; seconds=${3:-}; workers=${4:-0}
py=${PYTHON:-python}
name=$(basename "$recipe" .train.json)
mkdir -p "$out"
engine=onnxruntime
[ "${KERAS_BACKEND:-tensorflow}" = jax ] && engine=keras
args=(--out "$out/$name.npz" --workers "$workers" --teacher-engine "$engine")
[ -n "$seconds" ] && args+=(--max-seconds "$seconds")
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
"$py" -m maxidetect train "$recipe" "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v '^ *[0-9]*%|' | tee "$out/train.log"
[ -f "$out/$name.npz" ] || { echo "no weights yet (stopped before the last step): run again to resume"; exit 0; }

zoo="$out/zoo"
rm -rf "$zoo" && cp -r weights "$zoo"
export MAXIDETECT_WEIGHTS_DIR="$zoo"
# Registered as the chain's models are: the registered model's training priors and
# background maps, its arrays a delta on maximask.
"$py" - "$name" "$out/$name.npz" "$recipe" <<'EOF'
import json, sys
from maxidetect.network.weights import get_model_info, register_model
base = get_model_info("maxidetect-distill")
info = register_model(sys.argv[1], sys.argv[2], base.training_priors, description="scratch evaluation",
                      recipe=json.loads(open(sys.argv[3]).read()), background=base.normalisation["background"],
                      delta_base="maximask")
print(f"registered {info.name} in the scratch zoo ({info.sha256[:12]})")
EOF
"$py" -m maxidetect evaluate "$name" --against maxidetect-distill \
    --cr-labels benchmarks/labels/astroscrappy_gmos_crs.json \
    --crowded ../shared/data/real/fitswcs_zpn_ukirt_wfcam.fits -o "$out/eval" -q
"$py" benchmarks/real_class_fractions.py maxidetect-distill "$name" > "$out/eval/real_class_fractions.md"
rm -rf "$zoo"
echo "evaluation: $out/eval/report.md, $out/eval/real_class_fractions.md"
