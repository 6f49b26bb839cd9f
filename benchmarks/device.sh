#!/usr/bin/env bash
# The GPU-speed benchmark on a lent GPU machine (the workplace's `device` tool), as one prepared command.
#
# Here, once (the GPU machine reaches no package index; it has torch, timm, OpenCV, scikit-image, scipy, pandas and
# tqdm, but not segment-anything, which the SAM rows need):
#     make gpu-wheels                      # .whl/ (ignored by git): segment-anything as a wheel
# Then, with the device tool:  run  command="bash benchmarks/device.sh"  carry=[".whl"]  timeout_s=560
# The JSON (written after every row, so a cut-off run keeps what it measured) and the log come back under $OUT;
# record them in nbs/90_benchmarks.ipynb (benchmarks/results/, see that notebook).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-bench}; mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-420}          # rows not started by then read "not measured (time budget)"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__)"
export PYTHONUNBUFFERED=1
timeout $((BUDGET_S + 120)) python3 benchmarks/gpu.py --out "$OUT/gpu.json" --budget-s "$BUDGET_S" "$@" 2>&1 | tee "$OUT/gpu.log"
