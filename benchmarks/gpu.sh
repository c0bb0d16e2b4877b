#!/usr/bin/env bash
# GPU checks of sslrt, in one command, on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu.sh            # from the repository root (a checkout; no install needed)
#
# Runs (1) the GPU and TensorRT tests (pytest -m "gpu or tensorrt"; the TensorRT ones skip where
# TensorRT is not installed), (2) the parity report of every backend/precision available
# (benchmarks/parity.py -> benchmarks/parity_report_gpu_<card>.{md,json}), and (3) the latency of the
# torch-cuda backend fp32/fp16 against the eager fp32 reference (benchmarks/gpu_latency.py ->
# benchmarks/gpu_latency_<card>.{md,json}). Works offline: it installs nothing. Expected on the
# project's GPU machines: torch with CUDA, onnxruntime (CPU), no TensorRT; with onnxruntime-gpu,
# TensorRT and cuda-python also installed, the same command covers those backends.
# Environment: PYTHON (default: python3), SSLRT_SHARED (default ../shared), PAIRS (default 64).
# Each step runs even if an earlier one failed; the exit code is non-zero if any failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
log() { echo "== gpu.sh: $*" >&2; }

missing=$($PY - <<'PYEOF'
import importlib.util
need = ["numpy", "scipy", "cv2", "soundfile", "onnxruntime", "typer", "rich", "torch", "onnx", "pytest"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
  log "missing Python modules: $missing (install with: pip install -e '.[export,dev]'); the steps that need them will fail"
fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  log "torch sees no CUDA GPU: GPU tests will skip and the latency step measures nothing"
fi
card=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo unknown)
slug=$(echo "$card" | tr -c 'A-Za-z0-9\n' '_' | tr 'A-Z' 'a-z' | sed 's/__*/_/g; s/^_//; s/_$//')
log "device: $card"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>/dev/null >&2 || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2

log "1/3 GPU and TensorRT tests"
$PY -m pytest -q -rs -m "gpu or tensorrt" tests/test_gpu.py 2>&1 | tee "benchmarks/gpu_tests_${slug}.log" || status=1

log "2/3 parity report"
$PY benchmarks/parity.py --pairs "${PAIRS:-64}" --out "benchmarks/parity_report_gpu_${slug}" || status=1

log "3/3 torch-cuda latency vs the eager fp32 reference"
$PY benchmarks/gpu_latency.py || status=1

log "reports: benchmarks/gpu_tests_${slug}.log, benchmarks/parity_report_gpu_${slug}.md, benchmarks/gpu_latency_${slug}.md (exit $status)"
exit $status
