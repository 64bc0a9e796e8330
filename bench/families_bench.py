"""Tokenizer extension on the real tokenizers of the model families (issue 16): one row per family.

For each base (fetched and converted once by tests/real_tokenizers.py, cached under .cache-ci/), run
``tokenizer extend`` on the shared Hungarian train split with the English train split as reference, and
print: tokens added, held-out Hungarian tokens per word before and after, held-out English documents
whose ids changed, whether a ``tokenizer.model`` was written and agrees, the verification, and the
stage's seconds (wall and CPU of this process, so that a loaded machine does not decide the ratio).

    python bench/families_bench.py [--num-new-tokens 2000] [--families llama3 gemma ...]

Needs ../shared/corpora (the held-out splits are the shared valid ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from real_tokenizers import real_tokenizer

from langadapt.config import ExtendConfig
from langadapt.runs import run_stage
from langadapt.stages import BY_NAME

CORPORA = ROOT.parent / "shared" / "corpora"
FAMILIES = ["gpt2", "llama3", "qwen2", "qwen35", "phi3", "llama2", "mistral-v1", "mistral-v3", "tekken", "gemma"]


def one(name: str, n: int, work: Path) -> dict:
    import _pytest.outcomes

    try:
        base = real_tokenizer(name)
    except _pytest.outcomes.Skipped as exc:
        return {"family": name, "error": str(exc)}
    cfg = ExtendConfig(base=str(base), corpus=[str(CORPORA / "hu/train.jsonl.gz")],
                       english_corpus=[str(CORPORA / "en/train.jsonl.gz")],
                       english_heldout=[str(CORPORA / "en/valid.jsonl.gz")],
                       target_heldout=[str(CORPORA / "hu/valid.jsonl.gz")], num_new_tokens=n)  # fmt: skip
    out = work / name
    wall, cpu = time.perf_counter(), time.process_time()
    run_stage(BY_NAME["extend"], cfg, out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rec = json.loads((out / "extension.json").read_text())
    fert = rec["fertility"]["target_heldout"]
    ver = rec["verification"]
    return {
        "family": name, "style": rec["style"], "base_vocab": rec["base_vocab_size"], "added": rec["added"],
        "hu_tpw_before": fert["before"]["tokens_per_word"], "hu_tpw_after": fert["after"]["tokens_per_word"],
        "en_changed": rec["english_heldout_changed"]["changed"], "en_docs": rec["english_heldout_changed"]["docs"],
        "spm": (out / "tokenizer.model").is_file(), "spm_mismatches": ver.get("tokenizer_model_mismatches"),
        "verified": ver["ok"], "wall_s": wall, "cpu_s": cpu,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-new-tokens", type=int, default=2000)
    ap.add_argument("--families", nargs="*", default=FAMILIES)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            rows.append(one(name, args.num_new_tokens, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n+{args.num_new_tokens} tokens on the shared Hungarian train split, English reference on\n")
    print("| family | style | base vocab | added | hu tokens/word (held-out) | English docs changed | "
          "tokenizer.model | verified | wall s | CPU s |")
    print("|---|---|---:|---:|---|---:|---|---|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['family']} | skipped: {r['error']} |")
            continue
        spm = f"written, {r['spm_mismatches']} mismatches" if r["spm"] else "—"
        print(f"| {r['family']} | {r['style']} | {r['base_vocab']:,} | {r['added']:,} | "
              f"{r['hu_tpw_before']:.3f} → {r['hu_tpw_after']:.3f} | {r['en_changed']} of {r['en_docs']} | "
              f"{spm} | {'yes' if r['verified'] else 'NO'} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
