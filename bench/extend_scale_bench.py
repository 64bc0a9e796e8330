"""Parallel tokenizer extension at scale (issue 19): ``tokenizer extend --workers 1`` and ``--workers N``
against ``tokenizers``' BpeTrainer learning the same number of merges from scratch on the same text with
the same pre-tokenizer, side by side in one run, at several corpus sizes.

    python bench/extend_scale_bench.py [--sizes-mb 10 100 1000] [--workers 1 2] [--num-new-tokens 8000]

Corpora: built once from the shared Hungarian train split (``../shared/corpora/hu/train.jsonl.gz``,
LibreOffice help pages, 2,378 documents, 3.2 MB). Its documents are cut into sentences (after ``.!?:`` +
whitespace, and at line breaks: 54,372 sentences); each corpus document is 5-40 sentences drawn with
replacement by ``random.Random(SEED)``, joined by a space, written as JSON lines until the size is reached.
The files go to a cache outside the repository (``--cache``, default ``/tmp/langadapt-extend-scale``) and
are reused when their size and seed match. The mixes repeat the source's vocabulary, so distinct units
stay at the split's ~30k while the text grows: the bench measures throughput over the text, which is
what grows with a real corpus (a real 1 GB corpus has more distinct units: more memory, same speed).

Each run is its own subprocess under ``/usr/bin/time -v`` (wall time, peak RSS of the process tree's
largest process; with workers, the parent's and each worker's RSS are separate processes, so GNU time's
figure is the largest one of them) or, without GNU time, ``resource.getrusage(RUSAGE_CHILDREN)``.
The trainer runs with ``RAYON_NUM_THREADS`` = the largest worker count, i.e. the same cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from langadapt.models import resolve_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "corpora" / "hu" / "train.jsonl.gz"
SEED = 19
SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n+")
GNU_TIME = Path("/usr/bin/time")

# The trainer run: streamed from the same file through langadapt's reader, the base's normalizer and
# pre-tokenizer, the byte-level alphabet as initial alphabet (as bench/tokenizer_bench.py).
TRAINER = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from langadapt.corpus.readers import iter_documents
from langadapt.tokenizer.base import load_base
base = load_base(sys.argv[1]).tokenizer()
tok = Tokenizer(models.BPE())
tok.normalizer, tok.pre_tokenizer = base.normalizer, base.pre_tokenizer
alphabet = pre_tokenizers.ByteLevel.alphabet()
trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + int(sys.argv[3]), initial_alphabet=alphabet,
                              min_frequency=2, show_progress=False)
tok.train_from_iterator(iter_documents([sys.argv[2]]), trainer)
print("merges", len(tok.get_vocab()) - len(alphabet))
"""

# The extend run: the stage as `langadapt tokenizer extend --base B --corpus C --num-new-tokens N --workers W
# --out O` runs it (runs.run_stage, skip/commit protocol and verification included), without the CLI's
# import of every stage's options (~0.4 s) and printout.
EXTEND = """
import sys
from pathlib import Path
from langadapt.config import ExtendConfig
from langadapt.runs import run_stage
from langadapt.stages import BY_NAME
base, corpus, n, workers, out = sys.argv[1:]
if __name__ == "__main__":  # the worker processes are spawned: they re-import this script
    run_stage(BY_NAME["extend"], ExtendConfig(base=base, corpus=[corpus], num_new_tokens=int(n),
                                              workers=int(workers)), Path(out))
"""


def build_corpus(path: Path, size_mb: int) -> Path:
    """``size_mb`` MB of shuffled sentence mixes of the shared Hungarian train split (see the docstring)."""
    if path.exists() and path.stat().st_size >= size_mb * 1e6:
        return path
    sentences = []
    with gzip.open(SOURCE, "rt", encoding="utf-8") as fh:
        for line in fh:
            sentences += [s.strip() for s in SENTENCE_END.split(json.loads(line)["text"]) if s.strip()]
    rng = random.Random(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, written = path.with_suffix(".partial"), 0
    with open(tmp, "w", encoding="utf-8") as fh:
        while written < size_mb * 1e6:
            doc = " ".join(rng.choices(sentences, k=rng.randint(5, 40)))
            line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
            written += len(line.encode("utf-8"))
            fh.write(line)
    tmp.replace(path)
    return path


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one command in its own process."""
    if GNU_TIME.exists():
        start = time.perf_counter()
        proc = subprocess.run(
            [str(GNU_TIME), "-v", *cmd], env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - start
        if proc.returncode:
            sys.exit(
                f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
            )

        def field(name: str) -> float:
            return float(re.search(rf"{re.escape(name)}: ([\d.]+)", proc.stderr).group(1))

        # user + system time of the command and its waited-for children (the worker processes)
        cpu = field("User time (seconds)") + field("System time (seconds)")
        return {"wall": wall, "cpu": cpu, "rss_mb": field("Maximum resident set size (kbytes)") / 1024}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # ru_maxrss of all waited-for children: the largest so far, so run the smallest sizes first
    return {"wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--num-new-tokens", type=int, default=8000)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/langadapt-extend-scale"))
    ap.add_argument("--skip-trainer", action="store_true")
    args = ap.parse_args()

    base = str(resolve_tokenizer(args.base))
    threads = str(max(args.workers))
    env = {**os.environ, "RAYON_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "true"}
    print(
        f"base {args.base}, +{args.num_new_tokens} tokens, {os.cpu_count()} CPUs, trainer threads {threads}"
    )
    print(f"{'MB':>6} {'run':<22}{'wall s':>9}{'CPU s':>9}{'MB/s':>8}{'peak RSS MB':>13}{'vs trainer':>12}")
    for size in args.sizes_mb:
        corpus = build_corpus(args.cache / f"hu-mix-{size}mb-seed{SEED}.jsonl", size)
        mb = corpus.stat().st_size / 1e6
        rows = {}
        if not args.skip_trainer:
            rows["BpeTrainer"] = measure([sys.executable, "-c", TRAINER, base, str(corpus),
                                          str(args.num_new_tokens)], env)  # fmt: skip
        for n in args.workers:
            out = args.cache / f"out-{size}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            rows[f"extend --workers {n}"] = measure(
                [sys.executable, "-c", EXTEND, base, str(corpus), str(args.num_new_tokens), str(n), str(out)],
                env,
            )
        outs = [args.cache / f"out-{size}-{n}" / "tokenizer.json" for n in args.workers]
        same = len({p.read_bytes() for p in outs}) == 1
        trainer = rows.get("BpeTrainer")
        for name, r in rows.items():
            ratio = f"{r['wall'] / trainer['wall']:.2f}x" if trainer else "-"
            print(f"{mb:>6.0f} {name:<22}{r['wall']:>9.1f}{r['cpu']:>9.1f}{mb / r['wall']:>8.1f}{r['rss_mb']:>13.0f}"
                  f"{ratio:>12}", flush=True)  # fmt: skip
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{'':>6} tokenizer.json identical for workers {args.workers}: {same}; load average {load}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
