"""corpus prepare throughput, peak memory as input grows, and MinHash against datasketch.

    python bench/prepare_bench.py                       # shared corpora + generated 4/16/64 MB corpora
    python bench/prepare_bench.py --gen-mb 256 1024     # the ~1 GB point (about an hour per core)

Every prepare run is a child process with one datatrove task and one worker (so "per core" is exact);
it reports its own CPU time and peak RSS. Throughput counts the UTF-8 bytes of the input text.
The MinHash comparison runs datatrove's four MinHash stages (and nothing else) and datasketch's MinHash +
MinHashLSH with the same shingles (5 words after datatrove's text simplification), the same number of
bands and rows, on the same documents, and counts what each removes.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
ONLY_MINHASH = {
    "normalize": False,
    "min_script_ratio": 0.0,
    "language_id": False,
    "quality_filter": False,
    "boilerplate_filter": False,
    "exact_dedup": False,
}


# ------------------------------------------------------------------------------ one run (a child)


def child(spec: dict) -> None:
    """Run one prepare (through the stage runner, as the CLI does) and print its figures as JSON (called as
    ``--child JSON``)."""
    from langadapt.config import PrepareConfig
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    start = time.perf_counter()
    record = run_stage(BY_NAME["prepare"], PrepareConfig(**spec["config"]), Path(spec["out"]))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steps = {s["step"]: s for s in record["steps"]}
    print(json.dumps({
        "wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024, "docs_in": record["input"]["documents"],
        "bytes_in": record["input"]["bytes"], "docs_out": record["output"]["documents"],
        "bytes_out": record["output"]["bytes"],
        "step_seconds": {k: v["seconds"] for k, v in steps.items()},
        "minhash_removed": steps.get("minhash_dedup", {}).get("docs_in", 0) - steps.get("minhash_dedup", {}).get("docs_out", 0),
    }))  # fmt: skip


def run_child(config: dict, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps({"config": config, "out": str(out)})],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- generated corpus


def generate(path: Path, megabytes: float, seed: int = 0) -> int:
    """Hungarian-like documents of 3–12 paragraphs drawn from the shared (or packaged) corpus, with 2%
    exact and 2% near duplicates (1% of words changed) planted; returns the number of documents."""
    from langadapt.corpus.boilerplate import paragraphs
    from langadapt.corpus.readers import iter_documents

    src = SHARED / "hu" / "train.jsonl.gz"
    src = src if src.exists() else ROOT / "src" / "langadapt" / "demo_data" / "hu-train.jsonl.gz"
    pool = [p for d in iter_documents([src]) for p in paragraphs(d) if len(p.split()) >= 5]
    rng = random.Random(seed)
    target, size, n, recent = megabytes * 1e6, 0, 0, []
    with open(path, "w", encoding="utf-8") as fh:
        while size < target:
            roll = rng.random()
            if roll < 0.02 and recent:
                text = rng.choice(recent)
            elif roll < 0.04 and recent:
                words = rng.choice(recent).split(" ")
                for i in rng.sample(range(len(words)), max(1, len(words) // 100)):
                    words[i] = rng.choice(words)
                text = " ".join(words)
            else:
                text = "\n\n".join(rng.sample(pool, rng.randint(3, 12)))
            recent = (recent + [text])[-1000:]
            line = json.dumps({"id": f"gen{n}", "text": text}, ensure_ascii=False) + "\n"
            fh.write(line)
            size += len(text.encode("utf-8"))
            n += 1
    return n


# ------------------------------------------------------------------------------- datasketch baseline


def datasketch_dedup(path: Path, bands: int, rows: int, ngrams: int = 5) -> dict:
    """datasketch MinHash + MinHashLSH on the same shingles; removes all but the first of each group."""
    from datasketch import MinHash, MinHashLSH
    from datatrove.utils.text import TextNormConfig, simplify_text
    from datatrove.utils.text import ngrams as make_ngrams

    from langadapt.corpus.readers import iter_documents
    from langadapt.corpus.scripts import words

    start, cpu = time.perf_counter(), time.process_time()
    lsh = MinHashLSH(threshold=0.8, num_perm=bands * rows, params=(bands, rows))
    removed = 0
    for i, text in enumerate(iter_documents([path])):
        grams = {
            " ".join(g).encode("utf-8")
            for g in make_ngrams(words(simplify_text(text, TextNormConfig())), ngrams)
        }
        if not grams:
            continue
        mh = MinHash(num_perm=bands * rows, seed=1)
        mh.update_batch(list(grams))
        if lsh.query(mh):  # a kept document shares a band: this one is a near duplicate
            removed += 1
        else:
            lsh.insert(str(i), mh)
    return {"seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "removed": removed}


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--langs", nargs="*", default=["hu", "en", "ru", "ja", "tr", "sl"])
    parser.add_argument("--gen-mb", nargs="*", type=float, default=[4, 16, 64])
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--minhash-only", action="store_true", help="Only the MinHash comparison.")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from langadapt.corpus.minhash import minhash_params

    results: dict = {"shared": {}, "generated": {}, "minhash": {}}
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        print("| corpus | MB | docs | kept | MB/s per core | docs/s per core | wall s | peak RSS MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        runs = [(lang, SHARED / lang / "train.jsonl.gz", lang) for lang in args.langs]
        runs = [r for r in runs if r[1].exists()]
        for mb in args.gen_mb:
            path = tmp / f"gen-{mb:g}mb.jsonl"
            generate(path, mb)
            runs.append((f"generated {mb:g} MB", path, "hu"))
        for name, path, lang in [] if args.minhash_only else runs:
            r = run_child(
                {"input": [str(path)], "lang": lang},
                tmp / f"out-{len(results['shared']) + len(results['generated'])}",
            )
            (results["generated" if name.startswith("gen") else "shared"])[name] = r
            mb = r["bytes_in"] / 1e6
            print(f"| {name} | {mb:.1f} | {r['docs_in']} | {r['docs_out']} | {mb / r['cpu_s']:.2f} | "
                  f"{r['docs_in'] / r['cpu_s']:.0f} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)  # fmt: skip
        # MinHash: datatrove's stages vs datasketch on the largest generated corpus
        if args.gen_mb:
            path = tmp / f"gen-{max(args.gen_mb):g}mb.jsonl"
            bands, rows = minhash_params(0.8)
            dt = run_child({"input": [str(path)], "lang": "hu", **ONLY_MINHASH}, tmp / "out-minhash")
            ds = datasketch_dedup(path, bands, rows)
            results["minhash"] = {"datatrove": dt, "datasketch": ds, "bands": bands, "rows": rows}
            print(
                f"\nMinHash on {dt['docs_in']} documents ({dt['bytes_in'] / 1e6:.1f} MB), {bands} bands x {rows} rows:"
            )
            print("| implementation | MinHash wall s | process CPU s | removed |\n|---|---:|---:|---:|")
            print(f"| datatrove, 4 stages, 1 task | {dt['step_seconds']['minhash_dedup']:.1f} | "
                  f"{dt['cpu_s']:.1f} (incl. start-up, jsonl read/write) | {dt['minhash_removed']} |")  # fmt: skip
            print(
                f"| datasketch MinHash + MinHashLSH | {ds['seconds']:.1f} | {ds['cpu_s']:.1f} | {ds['removed']} |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
