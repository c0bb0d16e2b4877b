#!/usr/bin/env bash
# CPU reports of sslrt, regenerated in one command on the machine that runs it:
#
#     bash benchmarks/cpu.sh            # from the repository root, with sslrt[export,openvino] installed
#
# 1. a full-width (width 64) checkpoint in the released layout with random weights and randomised
#    BatchNorm statistics (the speed of the paper's model does not depend on its weights);
# 2. its export with INT8 graphs;
# 3. `sslrt bench` with every installed CPU backend (onnxruntime, openvino), fp32 and int8, engine
#    only and end to end, batch 1 and 8, reference = PyTorch fp32 eager
#    -> benchmarks/cpu/bench.{md,json,png}, and the end-to-end scope with 360x360 JPEGs -> benchmarks/cpu/e2e_360/;
# 4. OpenVINO's CPU properties against ONNX Runtime, interleaved (the measured basis of the
#    openvino backend's settings and of `auto`'s CPU ranking) -> benchmarks/cpu/openvino_modes.{md,json};
#    and, where nncf is installed, NNCF's INT8 against the QDQ export -> benchmarks/cpu/nncf_vs_qdq.{md,json};
# 5. INT8 accuracy against fp32 on 220 scene pairs, each CPU backend, for the trained demo model
#    (meaningful heatmaps) and the full-width random model -> benchmarks/cpu/int8_accuracy_*.{md,json};
# 6. cold start of `sslrt run` on one pair against importing numpy, cv2 and onnxruntime
#    -> benchmarks/cpu/cold_start.{md,json};
# 7. scaling: ms/pair and peak memory for batch 1..64, and 1 image x N sounds -> benchmarks/cpu/scaling.{md,json};
# 8. end to end with lanes against split batches, interleaved (the basis of localize_many's lanes)
#    -> benchmarks/cpu/lanes_ab.{md,json}.
# Run it on a quiet machine (`uptime` load well below the core count): the speed-ups are ratios
# within one run, but other load adds noise. SKIP="scaling e2e_360" skips steps by name.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
work=${WORK:-$(mktemp -d)}
out=benchmarks/cpu
skip=" ${SKIP:-} "
mkdir -p "$out"
backends=$($PY -c "from sslrt.engines import available_backends as a; print(','.join(b for b in ('onnxruntime', 'openvino') if b in a()))")
echo "cpu.sh: CPU backends here: $backends; load: $(uptime | sed 's/.*load average: //')" >&2
if [ ! -f "$work/full64/manifest.json" ]; then
  $PY -c "from sslrt.synthetic.checkpoints import make_checkpoint; make_checkpoint('$work/full64.pth.tar', width=64, seed=0)"
  $PY -m sslrt.cli export "$work/full64.pth.tar" -o "$work/full64" --int8
fi
[[ $skip == *" bench "* ]] || \
  $PY -m sslrt.cli bench -m "$work/full64" --backends "$backends" --precisions fp32,int8 --batch 1,8 --report "$out" ${BENCH_ARGS:-}
# the end-to-end scope again with VGG-SS-sized frames (decoding a 1024x1024 JPEG is the costliest step)
[[ $skip == *" e2e_360 "* ]] || \
  $PY -m sslrt.cli bench -m "$work/full64" --backends "$backends" --precisions fp32,int8 --batch 8 \
    --e2e-image-size 360 --report "$out/e2e_360" ${BENCH_ARGS:-}
if [[ $backends == *openvino* && $skip != *" modes "* ]]; then
  $PY benchmarks/openvino_modes.py --model "$work/full64" --out "$out/openvino_modes"
fi
# NNCF's post-training quantization against the QDQ export, both on OpenVINO (why sslrt offers no NNCF target)
if [[ $backends == *openvino* && $skip != *" nncf "* ]] && $PY -c "import nncf" 2>/dev/null; then
  $PY benchmarks/nncf_vs_qdq.py --model "$work/full64" --out "$out/nncf_vs_qdq"
fi
if [[ $skip != *" int8_accuracy "* ]]; then
  $PY benchmarks/int8_accuracy.py --model sslrt/assets/demo/export --backends "$backends" --out "$out/int8_accuracy_demo"
  $PY benchmarks/int8_accuracy.py --model "$work/full64" --backends "$backends" --out "$out/int8_accuracy_full64_random"
fi
[[ $skip == *" cold_start "* ]] || $PY benchmarks/cold_start.py --out "$out/cold_start"
[[ $skip == *" scaling "* ]] || $PY benchmarks/scaling.py --model "$work/full64" --backends "$backends" --out "$out/scaling"
[[ $skip == *" lanes "* ]] || $PY benchmarks/lanes_ab.py --model "$work/full64" --backends "$backends" --out "$out/lanes_ab"
echo "cpu.sh: reports in $out (load at the end: $(uptime | sed 's/.*load average: //'))" >&2
