"""Tokenizer extension benchmark (issue 2): prints, side by side in one run,

1. learning N new tokens by continued BPE (``plan_extension``, pure Python merge loop) and the whole
   ``tokenizer extend`` stage, against training a plain ``tokenizers`` BpeTrainer (Rust, multi-threaded)
   with the base's pre-tokenizer on the same corpus and the same number of merges;
2. encode throughput of the extended vs the base tokenizer (the extension may cost at most 10%), both
   one document at a time (one thread: steady on a shared machine) and with ``encode_batch_fast``.

    python bench/tokenizer_bench.py [--base smollm2-135m] [--num-new-tokens 8000] [--repeats 3]

Defaults use the corpus packaged with langadapt (the shared Hungarian / English splits).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from langadapt.config import ExtendConfig
from langadapt.corpus.readers import iter_documents
from langadapt.tokenizer.base import load_base
from langadapt.tokenizer.extend import extend, plan_extension

DEMO = Path(__file__).resolve().parents[1] / "src" / "langadapt" / "demo_data"


def seconds(fn, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def train_plain_bpe(base_name: str, texts: list[str], merges: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    base = load_base(base_name).tokenizer()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = base.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + merges, initial_alphabet=alphabet,
                                  min_frequency=2, show_progress=False)  # fmt: skip
    tok.train_from_iterator(texts, trainer)


def throughput(old, new, texts: list[str], repeats: int) -> dict[tuple[str, str], float]:
    """MB/s of each tokenizer, document by document and batched; base and extended runs alternate so a
    burst of load from other processes hits both alike, and the best of ``repeats`` counts."""
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    modes = {"1 doc": lambda tok: [tok.encode(t, add_special_tokens=False) for t in texts],
             "batch": lambda tok: tok.encode_batch_fast(texts, add_special_tokens=False)}  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        for mode, run in modes.items():
            for name, tok in (("base", old), ("extended", new)):
                t = seconds(lambda run=run, tok=tok: run(tok))
                best[mode, name] = max(best.get((mode, name), 0.0), mb / t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--corpus", default=str(DEMO / "hu-train.jsonl.gz"))
    ap.add_argument("--english", default=str(DEMO / "en-train.jsonl.gz"))
    valid = [str(DEMO / "hu-valid.jsonl.gz"), str(DEMO / "en-valid.jsonl.gz")]
    ap.add_argument("--valid", nargs="+", default=valid)
    ap.add_argument("--num-new-tokens", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    base = load_base(args.base)
    target, english = list(iter_documents([args.corpus])), list(iter_documents([args.english]))
    n = args.num_new_tokens
    ext = None

    def learn():
        nonlocal ext
        ext = plan_extension(base, target, num_new_tokens=n, english_texts=english)

    t_learn = seconds(learn)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtendConfig(base=args.base, corpus=[args.corpus], english_corpus=[args.english],
                           num_new_tokens=n)
        t_stage = seconds(lambda: extend(cfg, Path(tmp) / "tok"))
    t_plain = seconds(lambda: train_plain_bpe(args.base, target, n))
    print(f"## learning {n} tokens on {args.corpus} ({len(target)} docs)")
    print(f"{'continued BPE, merge learning (plan_extension)':<52}{t_learn:>8.2f} s")
    print(f"{'continued BPE, whole extend stage (+fertility, I/O)':<52}{t_stage:>8.2f} s")
    print(f"{'plain tokenizers BpeTrainer, same corpus and merges':<52}{t_plain:>8.2f} s")

    old, new = base.tokenizer(), ext.tokenizer()
    print(f"\n## encode throughput, MB/s (best of {args.repeats})")
    print(f"{'corpus':<22}{'mode':<8}{'base':>9}{'extended':>10}{'ratio':>8}")
    worst = float("inf")
    for path in args.valid:
        speed = throughput(old, new, list(iter_documents([path])), args.repeats)
        for mode in ("1 doc", "batch"):
            b, e = speed[mode, "base"], speed[mode, "extended"]
            worst = min(worst, e / b)
            print(f"{Path(path).name:<22}{mode:<8}{b:>9.2f}{e:>10.2f}{e / b:>8.2f}")
    verdict = "ok" if worst >= 0.9 else "OVER BUDGET"
    print(f"\nslowest extended/base throughput ratio: {worst:.2f} (must be >= 0.90: {verdict})")


if __name__ == "__main__":
    main()
