#!/usr/bin/env bash
# The checks that need a GPU, as one call on a lent GPU machine (the `device` tool), ~6 minutes:
#   1. every document-masking path that machine has (SDPA, flex_attention, flash-attn if installed):
#      packed loss AND gradients = those of the documents run one by one (tests/test_pretrain_masking.py);
#   2. every stage that runs a model (init's probe, distill, pretrain, eval) on the GPU through the stage
#      runner, on a tiny model (tests/test_gpu.py: device and bf16 recorded, frozen rows unchanged);
#   3. bench/pretrain_bench.py on SmolLM2-135M's shape (random weights), 8x2048 tokens per step, bf16:
#      our loop (flex + document mask) against the HF Trainer (padded; DataCollatorWithFlattening),
#      uncompiled and with torch.compile; tokens/s, MFU and peak memory side by side.
#
#   bench/gpu_check.sh prepare     # here, once: config + tokenizer of smollm2-135m into .gpu/ (~3 MB)
#   device run: command="bench/gpu_check.sh run", carry=[".gpu"], timeout_s=540
#
# The GPU image has torch, transformers and accelerate but not langadapt's data-preparation
# dependencies, which the training path does not import: src/ goes on PYTHONPATH instead of installing.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-run}" in
prepare)
  python - <<'EOF'
from pathlib import Path
from transformers import AutoConfig, AutoTokenizer
from langadapt.models import resolve_model

base, out = resolve_model("smollm2-135m"), Path(".gpu/base")
AutoConfig.from_pretrained(base).save_pretrained(out)
AutoTokenizer.from_pretrained(base).save_pretrained(out)
print("wrote", out)
EOF
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  ;;
run)
  export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
  out="${OUT:-/tmp/gpu_check}"
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
  python3 -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)" | tee -a "$out/device.txt"
  python3 -m pytest -q -p no:cacheprovider -rs tests/test_pretrain_masking.py 2>&1 | tail -15 | tee "$out/masking.txt"
  timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py 2>&1 | tail -15 | tee "$out/stages.txt" || true
  common=(--device cuda --model smollm2-shape --base .gpu/base --seq-len 2048 --rows 8 --steps 30 --repeats 1 --bf16)
  timeout 200 python3 bench/pretrain_bench.py "${common[@]}" 2>"$out/bench_eager.log" | tee "$out/bench_eager.md" || true
  timeout 240 python3 bench/pretrain_bench.py "${common[@]}" --compile 2>"$out/bench_compile.log" | tee "$out/bench_compile.md" || true
  ;;
*)
  echo "usage: bench/gpu_check.sh [prepare|run]" >&2
  exit 2
  ;;
esac
