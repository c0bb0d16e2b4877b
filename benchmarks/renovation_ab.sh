#!/usr/bin/env bash
# Issue 9's check: `sslrt bench` before the architecture renovation (BEFORE, default fce55a7) and
# after it (this checkout), on the same machine, interleaved twice, on one full-width INT8 export.
#
#     bash benchmarks/renovation_ab.sh     # writes $WORK/{before,after}_{1,2}.json; then renovation_ab.py
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD
PY=${PYTHON:-python3}
W=${WORK:-$(mktemp -d)}
BEFORE=${BEFORE:-fce55a7}
OLD=$W/before_tree
[ -d "$OLD" ] || git worktree add -f "$OLD" "$BEFORE" >/dev/null
if [ ! -f "$W/full64/manifest.json" ]; then
  PYTHONPATH=$HERE $PY -c "from sslrt.synthetic.checkpoints import make_checkpoint; make_checkpoint('$W/full64.pth.tar', width=64, seed=0)"
  PYTHONPATH=$HERE $PY -m sslrt.cli export "$W/full64.pth.tar" -o "$W/full64" --int8
fi
args="['bench','-m','$W/full64','--backends','onnxruntime','--precisions','fp32,int8','--batch','1,8','--e2e-pairs','32'"
for i in 1 2; do
  (cd "$OLD" && SSLRT_CACHE_DIR=$W/cache PYTHONPATH=$OLD $PY -c "from sslrt.cli import main; main($args,'--json','$W/before_$i.json'])")
  (cd "$HERE" && SSLRT_CACHE_DIR=$W/cache PYTHONPATH=$HERE $PY -c "from sslrt.cli import main; main($args,'--json','$W/after_$i.json'])")
done
PYTHONPATH=$HERE $PY benchmarks/renovation_ab.py "$W" > benchmarks/renovation_ab.md
git worktree remove --force "$OLD"
