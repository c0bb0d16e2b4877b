#!/usr/bin/env bash
# CPU reports of sslrt, regenerated in one command on the machine that runs it:
#
#     bash benchmarks/cpu.sh            # from the repository root, with sslrt[export] installed
#
# 1. a full-width (width 64) checkpoint in the released layout with random weights and randomised
#    BatchNorm statistics (the speed of the paper's model does not depend on its weights);
# 2. its export with INT8 graphs;
# 3. `sslrt bench` (engine only and end to end, batch 1 and 8, reference = PyTorch fp32 eager)
#    -> benchmarks/cpu/bench.{md,json,png}, and the end-to-end scope with 360x360 JPEGs -> benchmarks/cpu/e2e_360/;
# 4. INT8 accuracy against fp32 on 220 scene pairs, for the trained demo model (meaningful
#    heatmaps) and the full-width random model -> benchmarks/cpu/int8_accuracy_*.{md,json}.
# Run it on a quiet machine: the speed-ups are ratios within one run, but other load adds noise.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
work=${WORK:-$(mktemp -d)}
out=benchmarks/cpu
mkdir -p "$out"
$PY -c "from sslrt.synthetic.checkpoints import make_checkpoint; make_checkpoint('$work/full64.pth.tar', width=64, seed=0)"
$PY -m sslrt.cli export "$work/full64.pth.tar" -o "$work/full64" --int8
$PY -m sslrt.cli bench -m "$work/full64" --precisions fp32,int8 --batch 1,8 --report "$out" ${BENCH_ARGS:-}
# the end-to-end scope again with VGG-SS-sized frames (decoding a 1024x1024 JPEG is the costliest step)
$PY -m sslrt.cli bench -m "$work/full64" --precisions fp32,int8 --batch 8 --e2e-image-size 360 --report "$out/e2e_360" ${BENCH_ARGS:-}
$PY benchmarks/int8_accuracy.py --model sslrt/assets/demo/export --out "$out/int8_accuracy_demo"
$PY benchmarks/int8_accuracy.py --model "$work/full64" --out "$out/int8_accuracy_full64_random"
