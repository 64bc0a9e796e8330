#!/usr/bin/env bash
# The checks that need a GPU, as one call on a lent GPU machine (the `device` tool), ~6 minutes:
#   1. every document-masking path that machine has (SDPA, flex_attention, flash-attn if installed):
#      packed loss AND gradients = those of the documents run one by one (tests/test_pretrain_masking.py);
#   2. every stage that runs a model (init's probe, distill, pretrain, eval) on the GPU through the stage
#      runner, on a tiny model (tests/test_gpu.py: device and bf16 recorded, frozen rows unchanged);
#   3. bench/pretrain_bench.py on SmolLM2-135M's shape (random weights), 8x2048 tokens per step, bf16:
#      our loop (flex + document mask) against the HF Trainer (padded; DataCollatorWithFlattening),
#      uncompiled and with torch.compile; tokens/s, MFU and peak memory side by side;
#   4. vLLM (issue 18; skipped with the reason when vllm is not installed): an extended SmolLM2-shaped model
#      (random weights, 1,000 Hungarian tokens, embedding rows padded past the tokenizer as `embeddings init`
#      pads them) served from its HF folder: it loads with config.vocab_size > len(tokenizer), vLLM's
#      tokenizer gives transformers' ids, and greedy ids equal transformers' (fp32; a difference only where
#      transformers' top-2 logits are within 1e-4 is reported as a tie). `bench/gpu_check.sh vllm` runs it alone.
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
  if [ ! -f .gpu/ext-tokenizer/tokenizer.json ]; then  # the vLLM check's extended vocabulary (~3 MB)
    rm -rf .gpu/ext-tokenizer
    langadapt tokenizer extend --base smollm2-135m --corpus src/langadapt/demo_data/hu-train.jsonl.gz \
      --english-corpus src/langadapt/demo_data/en-train.jsonl.gz --num-new-tokens 1000 --out .gpu/ext-tokenizer
  fi
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  ;;
vllm)
  out="${OUT:-/tmp/gpu_check}"
  mkdir -p "$out"
  if ! python3 -c "import vllm" 2>/dev/null; then
    echo "vLLM check skipped: vllm is not installed here (pip install 'langadapt[vllm]')" | tee "$out/vllm.txt"
    exit 0
  fi
  timeout 420 python3 - .gpu/base .gpu/ext-tokenizer 2>"$out/vllm.log" <<'EOF' | tee "$out/vllm.txt"
import json, sys, tempfile
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

base, ext = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(ext)
rows = -(-len(tok) // 64) * 64 + 64  # padded past the tokenizer, as embeddings init pads
config = AutoConfig.from_pretrained(base, vocab_size=rows, initializer_range=0.2, torch_dtype="float32")
torch.manual_seed(0)  # random weights; a large init spread keeps greedy choices away from ties
model = AutoModelForCausalLM.from_config(config).eval()
folder = tempfile.mkdtemp(prefix="vllm-check-")
model.save_pretrained(folder)
tok.save_pretrained(folder)
prompts = ["A fájlokat a Fájl menüben nyithatja meg, ", "Select the cells you want to format and ",
           "<|im_start|>user\nSzia! Hogy vagy?<|im_end|>\n<|im_start|>assistant\n"]
n = 32
hf = []
with torch.inference_mode():
    for p in prompts:
        ids = tok(p)["input_ids"]
        new, gaps = [], []
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].float()
            top = torch.topk(logits, 2).values
            new.append(int(logits.argmax()))
            gaps.append(float(top[0] - top[1]))
        hf.append((ids, new, gaps))
del model
from vllm import LLM, SamplingParams

llm = LLM(model=folder, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3, max_model_len=512, seed=0)
greedy = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
by_text = llm.generate(prompts, greedy)
by_ids = llm.generate([{"prompt_token_ids": ids} for ids, _, _ in hf], greedy)
report = {"rows": rows, "tokenizer": len(tok), "items": []}
for p, (ids, want, gaps), t, i in zip(prompts, hf, by_text, by_ids):
    got = list(i.outputs[0].token_ids)
    at = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), None)
    report["items"].append({"prompt": p, "same_prompt_ids": list(t.prompt_token_ids) == ids, "agree": got == want,
                            "first_difference": at, "tie_there": at is not None and gaps[at] < 1e-4})
ok = all(x["same_prompt_ids"] and (x["agree"] or x["tie_there"]) for x in report["items"])
report["ok"] = ok
print(json.dumps(report, indent=1, ensure_ascii=False))
print("vLLM check:", "PASS" if ok else "FAIL", f"(config.vocab_size {rows} > len(tokenizer) {len(tok)})")
sys.exit(0 if ok else 1)
EOF
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
  "$0" vllm || true
  ;;
*)
  echo "usage: bench/gpu_check.sh [prepare|run|vllm]" >&2
  exit 2
  ;;
esac
