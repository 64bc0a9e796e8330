"""Tokenizer extension benchmark (issue 2): prints, side by side in one run,

1. learning N new tokens by continued BPE (``plan_extension``, pure Python merge loop) and the whole
   ``tokenizer extend`` stage, against training a plain ``tokenizers`` BpeTrainer (Rust, multi-threaded)
   with the base's pre-tokenizer on the same corpus and the same number of merges;
2. encode throughput of the extended vs the base tokenizer (the extension may cost at most 10%), one
   document at a time and with ``encode_batch_fast``, in MB per CPU-second of this process (CPU time,
   not wall time, so that other processes on a shared machine do not decide the ratio).

    python bench/tokenizer_bench.py [--base smollm2-135m] [--num-new-tokens 8000] [--repeats 3]

Defaults use the corpus packaged with langadapt (the shared Hungarian / English splits).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer

from langadapt.config import ExtendConfig
from langadapt.corpus.readers import iter_documents
from langadapt.runs import run_stage
from langadapt.stages import BY_NAME
from langadapt.tokenizer import extend as extend_module
from langadapt.tokenizer.base import load_base
from langadapt.tokenizer.extend import plan_extension
from langadapt.tokenizer.merges import learn_merges

DEMO = Path(__file__).resolve().parents[1] / "src" / "langadapt" / "demo_data"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def train_plain_bpe(base_name: str, texts: list[str], merges: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    base = load_base(base_name).tokenizer()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = base.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + merges, initial_alphabet=alphabet,
                                  min_frequency=2, show_progress=False)  # fmt: skip
    tok.train_from_iterator(texts, trainer)


def cpu_seconds(fn) -> float:
    """CPU time of this process (all threads): unlike wall time, barely moved by other processes' load."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def throughput(old, new, texts: list[str], repeats: int) -> dict[tuple[str, str], float]:
    """MB per CPU-second of each tokenizer, document by document and batched.

    Base and extended runs alternate and each starts with an empty BPE word cache, so both do the
    same work; the best of ``repeats`` counts.
    """
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    modes = {"1 doc": lambda tok: [tok.encode(t, add_special_tokens=False) for t in texts],
             "batch": lambda tok: tok.encode_batch_fast(texts, add_special_tokens=False)}  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        for mode, run in modes.items():
            for name, tok in (("base", old), ("extended", new)):
                tok.model._clear_cache()
                t = cpu_seconds(lambda run=run, tok=tok: run(tok))
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
    ext, loop = None, []

    def learn_merges_timed(*args, **kwargs):  # the merge loop alone, inside plan_extension
        wall, cpu = time.perf_counter(), time.process_time()
        result = learn_merges(*args, **kwargs)
        loop.append((time.perf_counter() - wall, time.process_time() - cpu))
        return result

    def learn():
        nonlocal ext
        ext = plan_extension(base, target, num_new_tokens=n, english_texts=english)

    extend_module.learn_merges = learn_merges_timed
    rows = [("continued BPE: units, base tokenization, merges", timed(learn)),
            ("  of which the merge loop (pure Python)", loop[0])]  # fmt: skip
    extend_module.learn_merges = learn_merges
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtendConfig(base=args.base, corpus=[args.corpus], english_corpus=[args.english],
                           num_new_tokens=n)
        stage = timed(lambda: run_stage(BY_NAME["extend"], cfg, Path(tmp) / "t"))
    rows.append(("whole `tokenizer extend` stage (+report, I/O)", stage))
    plain = timed(lambda: train_plain_bpe(args.base, target, n))
    rows.append(("plain tokenizers BpeTrainer, same corpus, N merges", plain))
    print(f"## learning {n} tokens on {Path(args.corpus).name} ({len(target)} docs), English reference "
          f"{Path(args.english).name}")
    print(f"{'':<52}{'wall s':>8}{'CPU s':>8}")
    for label, (wall, cpu) in rows:
        print(f"{label:<52}{wall:>8.2f}{cpu:>8.2f}")

    old, new = Tokenizer.from_file(str(base.folder / "tokenizer.json")), ext.tokenizer()
    print(f"\n## encode throughput, MB per CPU-second (best of {args.repeats}, cold BPE cache)")
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
