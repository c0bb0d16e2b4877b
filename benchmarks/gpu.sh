#!/usr/bin/env bash
# GPU checks of sslrt, in one command, on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu.sh OUT_DIR [WHEEL_DIR]      # from a checkout; OUT_DIR gets every report
#
# Self-sufficient on a bare CUDA machine that has torch but maybe not soundfile, onnxruntime(-gpu),
# TensorRT, cuda-python or Polygraphy, and no network: what is missing is installed from the wheels
# found under WHEEL_DIR (default $SSLRT_WHEELS, else ./wheels; `pip install --no-index
# --find-links`), or its steps are skipped with the reason. Then it runs
#   (1) the GPU decision tests that need no GPU (tests/test_gpu_paths.py, tests/test_tensorrt_api.py),
#   (2) every GPU test that can run here (pytest -m "gpu or tensorrt" tests/test_gpu.py; the others
#       skip with their reason), with a JUnit report,
#   (3) the parity report of every backend/precision available (benchmarks/parity.py),
#   (4) the latency of torch-cuda fp32/fp16 against the eager fp32 reference on the same GPU, batch
#       1..256 (benchmarks/gpu_latency.py),
#   (5) `sslrt bench`, engine only, of every GPU backend here (onnxruntime-cuda, torch-cuda; fp32 and
#       fp16) on a full-width export, batch 1 and 128, with its usual CPU reference row,
#   (6) end to end (1024 px JPEG + 10 s WAV files -> results) against engine only for those backends
#       in fp16 at batch 32, with 8 preparation threads, 8 worker processes and the default for a
#       GPU engine (every core but one, in processes on 4+ cores) (benchmarks/e2e_workers.py),
# and writes OUT_DIR/gpu_environment.txt (card, driver, CUDA, packages: what each number was measured
# with), OUT_DIR/gpu_tests_<card>.{log,xml}, OUT_DIR/parity_report_gpu_<card>.{md,json},
# OUT_DIR/gpu_latency_<card>.{md,json}, OUT_DIR/gpu_bench_<card>.{md,json},
# OUT_DIR/gpu_e2e_workers_<card>.{md,json}, OUT_DIR/summary.txt.
# Environment: PYTHON (default: python3), SSLRT_SHARED (default ../shared), PAIRS (default 64),
# E2E_PAIRS (pairs of step 6, default 256).
# Each step runs even if an earlier one failed; the exit code is non-zero if any failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-}
if [ -z "$OUT" ]; then
  echo "usage: bash benchmarks/gpu.sh OUT_DIR [WHEEL_DIR]" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WHEELS=${2:-${SSLRT_WHEELS:-wheels}}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SSLRT_CACHE_DIR="${SSLRT_CACHE_DIR:-$OUT/cache}"
status=0
log() { echo "== gpu.sh: $*" | tee -a "$OUT/summary.txt" >&2; }
: > "$OUT/summary.txt"

has() { $PY -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)" 2>/dev/null; }

# -- install what is missing, from local wheels only ------------------------------------------------
install_local() {  # install_local MODULE PIP_SPEC...
  local module=$1; shift
  if has "$module"; then return 0; fi
  if [ -d "$WHEELS" ] && $PY -m pip install -q --no-index --find-links "$WHEELS" "$@" >>"$OUT/summary.txt" 2>&1; then
    log "installed $* from $WHEELS"
  else
    log "$module missing (no wheel for '$*' under $WHEELS): the steps that need it skip"
  fi
}
for spec in "numpy:numpy" "scipy:scipy" "cv2:opencv-python-headless" "typer:typer" "rich:rich" "onnx:onnx" \
            "pytest:pytest" "polygraphy:polygraphy" "soundfile:soundfile" "onnxslim:onnxslim" "simplejpeg:simplejpeg"; do
  install_local "${spec%%:*}" "${spec#*:}"
done
# ONNX Runtime: onnxruntime-gpu where a wheel of it is here (it replaces the CPU package: never both),
# else the CPU one (the reference exports and parity need one of them).
if [ -d "$WHEELS" ] && ls "$WHEELS"/onnxruntime_gpu-*.whl >/dev/null 2>&1; then
  if ! $PY -c "import importlib.metadata as m; m.version('onnxruntime-gpu')" 2>/dev/null; then
    $PY -m pip uninstall -y -q onnxruntime >/dev/null 2>&1
    $PY -m pip install -q --no-index --find-links "$WHEELS" onnxruntime-gpu >>"$OUT/summary.txt" 2>&1 \
      && log "installed onnxruntime-gpu from $WHEELS" || log "onnxruntime-gpu wheel did not install"
  fi
else
  install_local onnxruntime onnxruntime
fi
# TensorRT and cuda-python of the CUDA major of torch's build (else the driver's), never a mix.
major=$($PY -c "import torch; print((torch.version.cuda or '').split('.')[0])" 2>/dev/null)
if [ -z "$major" ] && command -v nvidia-smi >/dev/null; then
  major=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
fi
if [ -n "$major" ]; then
  install_local tensorrt "tensorrt-cu${major}"
  install_local cuda "cuda-python>=${major},<$((major + 1))"
fi

# -- environment: what every number below was measured with ------------------------------------------
card=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
if [ -z "$card" ] && command -v nvidia-smi >/dev/null; then card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); fi
card=${card:-no GPU}
slug=$(echo "$card" | tr -c 'A-Za-z0-9\n' '_' | tr 'A-Z' 'a-z' | sed 's/__*/_/g; s/^_//; s/_$//')
{
  echo "card: $card"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
  $PY - <<'PYEOF'
import importlib.metadata as md, platform
print("python", platform.python_version(), platform.platform())
for name in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12_bindings",
             "tensorrt_cu13_bindings", "cuda-python", "cuda-bindings", "polygraphy", "onnx", "numpy", "soundfile"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
try:
    import torch
    print("torch cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "available", torch.cuda.is_available())
except Exception as exc:
    print("torch:", exc)
from sslrt.engines.cuda import probe
print("cuda probe:", probe())
from sslrt.engines import available_backends
print("backends:", sorted(available_backends(include_torch=True)))
from sslrt.engines.onnxruntime import GPU_BACKEND_PROVIDERS, provider_load_error
for backend, provider in GPU_BACKEND_PROVIDERS.items():
    print(f"{backend}: {provider_load_error(provider) or 'loads'}")
try:
    from sslrt.engines.tensorrt import load_error
    print("tensorrt:", load_error() or "loads")
except Exception as exc:
    print("tensorrt:", exc)
PYEOF
} > "$OUT/gpu_environment.txt" 2>&1
log "device: $card (environment: $OUT/gpu_environment.txt)"

# -- 1. decisions and API surface (no GPU needed) -----------------------------------------------------
log "1/6 GPU-path decision tests and the TensorRT API surface"
$PY -m pytest -q -rs tests/test_gpu_paths.py tests/test_tensorrt_api.py -p no:cacheprovider \
  --junitxml "$OUT/gpu_paths_${slug}.xml" 2>&1 | tee "$OUT/gpu_paths_${slug}.log" || status=1

# -- 2. every GPU test that can run here --------------------------------------------------------------
log "2/6 GPU and TensorRT tests"
$PY -m pytest -q -rs -m "gpu or tensorrt" tests/test_gpu.py -p no:cacheprovider \
  --junitxml "$OUT/gpu_tests_${slug}.xml" 2>&1 | tee "$OUT/gpu_tests_${slug}.log" || status=1

# -- 3. parity report ----------------------------------------------------------------------------------
log "3/6 parity report"
if has onnx && has onnxruntime; then
  $PY benchmarks/parity.py --pairs "${PAIRS:-64}" --out "$OUT/parity_report_gpu_${slug}" || status=1
else
  log "parity report skipped: needs onnx and onnxruntime (wheels under $WHEELS)"
fi

# -- 4. torch-cuda latency ---------------------------------------------------------------------------
log "4/6 torch-cuda latency vs the eager fp32 reference"
if has torch; then
  $PY benchmarks/gpu_latency.py --out-dir "$OUT" || status=1
else
  log "latency skipped: torch is not installed"
fi

# -- 5. sslrt bench of the GPU backends ------------------------------------------------------------
log "5/6 sslrt bench, engine only, GPU backends"
gpu_backends=$($PY -c "from sslrt.engines import available_backends as a; print(','.join(b for b in ('onnxruntime-cuda', 'torch-cuda') if b in a(include_torch=True)))" 2>/dev/null)
if [ -n "$gpu_backends" ] && has onnx; then
  work=$(mktemp -d)
  if $PY -c "from sslrt.synthetic.checkpoints import make_checkpoint; make_checkpoint('$work/full64.pth.tar', width=64, seed=0)" \
      && $PY -m sslrt.cli export "$work/full64.pth.tar" -o "$work/full64" --fp16 >>"$OUT/summary.txt" 2>&1; then
    $PY -m sslrt.cli bench -m "$work/full64" --backends "$gpu_backends" --precisions fp32,fp16 --batch 1,128 --scope engine \
      --seconds 1 --json "$OUT/gpu_bench_${slug}.json" > "$OUT/gpu_bench_${slug}.md" || status=1
    # -- 6. end to end on the GPU backends: is the host (decoding) or the engine the limit? --------
    log "6/6 end to end vs engine only, GPU backends, per preparation-thread count"
    if has soundfile; then
      $PY benchmarks/e2e_workers.py --model "$work/full64" --backends "$gpu_backends" --precision fp16 --batch 32 \
        --pairs "${E2E_PAIRS:-256}" --workers 8,p8,auto --out "$OUT/gpu_e2e_workers_${slug}" || status=1
    else
      log "end to end skipped: soundfile is not installed (no wheel for it under $WHEELS)"
    fi
  else
    log "bench and end to end skipped: the full-width export failed (see above)"; status=1
  fi
  rm -rf "$work"
else
  log "bench and end to end skipped: no GPU backend available here (${gpu_backends:-none}) or no onnx"
fi

log "reports in $OUT (exit $status)"
exit $status
