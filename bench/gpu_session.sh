#!/bin/bash
# One device call for a GPU session (docs/benchmarks.md, GPU): fast style, the gpu-check smoke, then
# its throughput, each stage under its own timeout so the whole fits one call of at most 9.5 minutes
# and a stage that hangs costs only its own share. Run from the repository root on the GPU machine,
# with .gpu-wheels carried (`make gpu-wheels` here first). What comes back is under $OUT (8 files at
# most): run.log, gpu-check.json, gpu-check.md, throughput.json, and the fast-style pictures.
set -u
OUT=${OUT:-.artifacts/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpu-wheels/site:$PWD
exec > >(tee -a "$OUT/run.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.version.cuda)'

echo "== fast style $(date -u +%T)"
timeout 150 python3 -m bench.fast_style --device cuda --timeout-s 140 --out /tmp/gpu-session-fs
echo "fast style rc=$?"
cp /tmp/gpu-session-fs/*.png "$OUT/" 2>/dev/null

echo "== gpu-check smoke $(date -u +%T)"
timeout 225 python3 -m bench.gpu_check --skip-throughput --deadline-s 150 --out /tmp/gpu-session-gc
echo "gpu-check smoke rc=$?"
cp /tmp/gpu-session-gc/results.json "$OUT/gpu-check.json"
cp /tmp/gpu-session-gc/report.md "$OUT/gpu-check.md"

echo "== throughput $(date -u +%T)"
timeout 185 python3 - <<'PY'
import json
from pathlib import Path

import torch

from bench.gpu_throughput import run_throughput

result = run_throughput(torch.device("cuda"), quick=False, out=Path("/tmp/gpu-session-tp"), compile_timeout_s=45)
print(result.get("summary"))
print(json.dumps(result.get("errors"), indent=1))
PY
echo "throughput rc=$?"
cp /tmp/gpu-session-tp/throughput.json "$OUT/" 2>/dev/null
date -u
