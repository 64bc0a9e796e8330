"""7B-shaped memory on the CPU (issue 19): peak RSS of each embedding / eval stage against the model's bytes.

Two models are built from config with random weights and saved in bf16, 2 layers each, with the real
tokenizers of tests/real_tokenizers.py (cached under .cache-ci/):

* ``mistral``: Mistral-7B's widths (hidden 4,096, intermediate 14,336, 32 heads / 8 KV heads, untied
  head), vocabulary 32,768 (the real mistral-v3 SentencePiece tokenizer);
* ``llama3``: Llama-3-8B's widths (the same, untied head), vocabulary 128,256 (the real llama3 tokenizer).

For each: ``tokenizer extend`` (+1,000 tokens on the demo Hungarian text; built once, not measured),
then each measured stage in its own subprocess under ``/usr/bin/time -v`` (peak RSS = its "Maximum
resident set size"; without GNU time, ``resource.getrusage(RUSAGE_CHILDREN)``): ``embeddings init``,
``embeddings distill`` (2 distil + 1 calibration steps, batch 2, spans of 32 tokens), ``eval bpb`` of the
init output on 8 Hungarian documents cut to 400 characters (``bpb``: in float32, the default;
``bpb-auto``: ``--dtype auto``, as stored), and ``export gguf --verify off`` of the init output where the
CLI has it.
Each row: peak RSS, its ratio to the base model's bytes (its safetensors files), the dtypes of the
tensors the stage wrote, and wall seconds.

    python bench/memory_7b.py --label after [--models mistral llama3] [--skip llama3:distill]
    python bench/memory_7b.py --label before --src /tmp/la-before/src   # the code of another tree

    python bench/memory_7b.py --table /tmp/mem7b/results.jsonl   # before | after, markdown

``--src`` puts another checkout's ``src`` first on PYTHONPATH for the measured stages (how the "before"
figures were taken: ``git archive HEAD src | tar -x -C /tmp/la-before``). Everything is written under
``--work`` (default /tmp/mem7b); the models are deleted at the end unless ``--keep``. The stages run one
at a time: the machine's memory is shared. Results are appended to ``<work>/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "langadapt" / "demo_data"
GIB = 1024**3

SHAPES = {
    "mistral": {"tokenizer": "mistral-v3", "model_type": "mistral", "extra": {"sliding_window": None}},
    "llama3": {"tokenizer": "llama3", "model_type": "llama", "extra": {"rope_theta": 500000.0}},
}
# llama.cpp's converter as the export tests extract it (tests/llamacpp_fixture.py); else $LANGADAPT_LLAMA_CPP
_CONVERTER = ROOT / ".cache-ci" / "real-tokenizers" / "llama.cpp" / "llama_cpp_python-0.3.36"
LLAMA_CPP = ["--llama-cpp", str(_CONVERTER)] if _CONVERTER.is_dir() else []
WIDTHS = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
          "num_hidden_layers": 2, "max_position_embeddings": 8192, "tie_word_embeddings": False}  # fmt: skip


def build(name: str, folder: Path) -> None:
    """The base model: random weights from config, in bf16, with the family's real tokenizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from real_tokenizers import real_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = SHAPES[name]
    tok = AutoTokenizer.from_pretrained(real_tokenizer(shape["tokenizer"]))
    config = AutoConfig.for_model(shape["model_type"], vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, **WIDTHS, **shape["extra"])  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def safetensors_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def safetensors_dtypes(folder: Path) -> dict[str, int]:
    """{dtype: tensors} from the safetensors headers (nothing loaded)."""
    counts: dict[str, int] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, info in header.items():
            if key != "__metadata__":
                counts[info["dtype"]] = counts.get(info["dtype"], 0) + 1
    return counts


def measured(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; its peak RSS (GiB), wall seconds and exit code."""
    gnu = Path("/usr/bin/time")
    t0 = time.perf_counter()
    if gnu.exists():
        proc = subprocess.run([str(gnu), "-v", *cmd], env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        rss_kb = next((int(line.split(":")[1]) for line in proc.stderr.splitlines()
                       if "Maximum resident set size" in line), 0)  # fmt: skip
    else:  # ru_maxrss of the children is the largest of them: one child per call keeps it this one's
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
    return {"peak_rss_gib": rss_kb / 1024**2, "seconds": round(wall, 1), "rc": proc.returncode}


def langadapt(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from langadapt.cli import main; main(sys.argv[1:])", *args]


def has_export(env: dict[str, str]) -> bool:
    cmd = langadapt("export", "gguf", "--help")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False).returncode == 0


def run_model(name: str, args: argparse.Namespace, env: dict[str, str], results: Path) -> None:
    work = args.work / name
    base, tok = work / "base", work / "tok"
    # built once and reused by the before / after runs (neither step is measured)
    if not (base / "config.json").exists():
        subprocess.run([sys.executable, __file__, "--build", name, str(base)], env=env, check=True)
    if not (tok / "DONE").exists():
        subprocess.run(langadapt("tokenizer", "extend", "--base", str(base), "--corpus", str(DEMO / "hu-train.jsonl.gz"),
                                 "--num-new-tokens", "1000", "--out", str(tok)), env=env, check=True)  # fmt: skip
    model_bytes = safetensors_bytes(base)
    label = args.label
    init, dist, bpb, bpb_auto, gguf = (work / f"{s}-{label}" for s in ("init", "distill", "bpb", "bpb-auto", "gguf"))
    stages = {
        "init": (init, ["embeddings", "init", "--model", str(base), "--tokenizer", str(tok), "--out", str(init)]),
        "distill": (dist, ["embeddings", "distill", "--model", str(init), "--teacher", str(base), "--corpus",
                           str(DEMO / "hu-train.jsonl.gz"), "--steps", "2", "--calibrate-steps", "1",
                           "--batch-size", "2", "--seq-len", "32", "--report-to", "none", "--out", str(dist)]),
        "bpb": (bpb, ["eval", "bpb", "--models", str(init), "--target", str(DEMO / "hu-valid.jsonl.gz"),
                      "--max-docs", "8", "--max-doc-chars", "400", "--out", str(bpb)]),
        # the same in the dtype the model is stored in (bf16: no float32 copy)
        "bpb-auto": (bpb_auto, ["eval", "bpb", "--models", str(init), "--target", str(DEMO / "hu-valid.jsonl.gz"),
                                "--max-docs", "8", "--max-doc-chars", "400", "--dtype", "auto", "--out", str(bpb_auto)]),
        # the conversion only (llama.cpp's converter, f16): the runtime check loads the GGUF once more
        "export": (gguf, ["export", "gguf", "--model", str(init), "--verify", "off", *LLAMA_CPP, "--out", str(gguf)]),
    }  # fmt: skip
    for stage, (out, cli) in stages.items():
        if f"{name}:{stage}" in args.skip or stage in args.skip:
            continue
        if stage == "export" and not has_export(env):
            print(f"[{name}] export gguf: not in this tree's CLI, skipped")
            continue
        shutil.rmtree(out, ignore_errors=True)
        row = {"label": label, "model": name, "stage": stage, "model_gib": model_bytes / GIB,
               **measured(langadapt(*cli), env)}  # fmt: skip
        row["ratio"] = row["peak_rss_gib"] * GIB / model_bytes
        wrote = out.exists() and any(out.glob("*.safetensors"))
        row["out_dtypes"] = safetensors_dtypes(out) if wrote else None
        row["out_gib"] = safetensors_bytes(out) / GIB if wrote else None
        if stage == "export" and out.exists():  # a .gguf file (the converter's default type, f16)
            row["out_gib"] = sum(f.stat().st_size for f in out.rglob("*.gguf")) / GIB
        print(json.dumps(row), flush=True)
        with open(results, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if stage in ("bpb", "bpb-auto", "distill"):
            shutil.rmtree(out, ignore_errors=True)  # only the init output is read again
    if not args.keep:
        for stage in ("init", "export"):
            shutil.rmtree(stages[stage][0], ignore_errors=True)


def table(results: Path) -> str:
    """before | after per model and stage, from the newest row of each (label, model, stage)."""
    rows = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["label"], row["model"], row["stage"]] = row

    def cell(row: dict | None) -> str:
        if row is None:
            return "not run"
        if row["rc"] != 0:
            return f"failed (rc {row['rc']})"
        dtypes = "/".join(row["out_dtypes"]) if row.get("out_dtypes") else ("gguf" if row["stage"] == "export" else "-")
        return f"{row['peak_rss_gib']:.2f} GiB = {row['ratio']:.2f}x, {dtypes}, {row['seconds']:.0f} s"

    out = ["| model (bytes) | stage | before | after |", "|---|---|---|---|"]
    for name in SHAPES:
        for stage in ("init", "distill", "bpb", "bpb-auto", "export"):
            before, after = rows.get(("before", name, stage)), rows.get(("after", name, stage))
            if before or after:
                gib = (before or after)["model_gib"]
                out.append(f"| {name} ({gib:.2f} GiB) | {stage} | {cell(before)} | {cell(after)} |")
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print(table(Path(sys.argv[2])))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--build":
        build(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--src", type=Path, help="run the measured stages from this src folder")
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--skip", nargs="*", default=[], help="stages (or model:stage) not to run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mem7b"))
    parser.add_argument("--keep", action="store_true", help="keep the base models and tokenizers")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        run_model(name, args, env, args.work / "results.jsonl")
    if not args.keep:
        for name in args.models:
            for sub in ("base", "tok"):
                shutil.rmtree(args.work / name / sub, ignore_errors=True)


if __name__ == "__main__":
    main()
