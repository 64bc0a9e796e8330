"""Packing benchmark: tokens/s, peak memory against input size, and memmap vs Arrow read speed.

    python bench/pack_bench.py --sizes-mb 25 250 --workers 2

For each size, the shared Hungarian and English training corpora are repeated into a temporary folder
(half the bytes each) and ``langadapt data pack`` packs (nearly) all of it, in a subprocess whose whole
process tree (main + tokenizer workers) is sampled for resident memory. Memory should not grow with the
input. Then the rows of the smallest run are read back from the memmap and from the same rows saved as a
``datasets`` Arrow folder: random single rows, random batches of 8, and a full sequential scan.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

CORPORA = Path("/work/shared/corpora")


def write_repeated(src: Path, dst: Path, size_bytes: int) -> int:
    """Repeat ``src``'s documents into jsonl ``dst`` until it holds ``size_bytes``; return documents."""
    with gzip.open(src, "rt", encoding="utf-8") as fh:
        lines = [line if line.endswith("\n") else line + "\n" for line in fh]
    written = docs = 0
    with open(dst, "w", encoding="utf-8") as out:
        for line in itertools.cycle(lines):
            out.write(line)
            written += len(line.encode("utf-8"))
            docs += 1
            if written >= size_bytes:
                return docs
    return docs


def tokens_per_byte(src: Path, tokenizer: str) -> float:
    from langadapt.models import load_fast_tokenizer

    tok = load_fast_tokenizer(tokenizer)
    with gzip.open(src, "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    n_tokens = sum(len(e.ids) + 1 for e in tok.encode_batch(texts, add_special_tokens=False))
    return n_tokens / sum(len(t.encode("utf-8")) for t in texts)


def run_pack(work: Path, hu: Path, en: Path, tokens: int, ratio: float, args: argparse.Namespace) -> dict:
    """Run ``data pack`` in a subprocess, sampling the RSS of its whole process tree."""
    out = work / "packed"
    cmd = [sys.executable, "-m", "langadapt.cli", "data", "pack", "--tokenizer", args.tokenizer,
           "--target", str(hu), "--english", str(en), "--out", str(out), "--ratio", f"{ratio:.6f}",
           "--seq-len", str(args.seq_len), "--tokens", str(tokens), "--workers", str(args.workers)]  # fmt: skip
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_tree = peak_main = 0
    cpu: dict[int, float] = {}  # last CPU seconds seen per process: steadier than wall time on a busy box
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree]
            for p in tree:
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
        except psutil.Error:
            continue
        peak_main, peak_tree = max(peak_main, rss[0]), max(peak_tree, sum(rss))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"data pack failed: {stderr.strip()}")
    info = json.loads((out / "pack.json").read_text())
    return {"seconds": seconds, "cpu_seconds": sum(cpu.values()), "peak_tree_mb": peak_tree / 2**20, "peak_main_mb": peak_main / 2**20,
            "info": info, "out": out}  # fmt: skip


def read_speed(folder: Path, work: Path, n: int = 2000, max_rows: int = 8192) -> dict[str, float]:
    """Rows per second: memmap (PackedDataset) vs the same rows as an Arrow dataset (numpy format).

    Both read the first ``max_rows`` rows only (building the Arrow copy holds them in memory once).
    """
    from datasets import Dataset, load_from_disk

    from langadapt.data.pack import PackedDataset

    mm = PackedDataset(folder)
    rows = min(len(mm), max_rows)
    arrow_dir = work / "arrow"
    Dataset.from_dict({"input_ids": np.asarray(mm.input_ids[:rows]), "position_ids": np.asarray(mm.position_ids[:rows])}
                      ).save_to_disk(str(arrow_dir))  # fmt: skip
    ar = load_from_disk(str(arrow_dir)).with_format("numpy")
    rng = np.random.default_rng(0)
    singles = rng.integers(0, rows, n)
    batches = rng.integers(0, rows, (n // 8, 8))
    readers = {
        "memmap": (lambda i: mm[int(i)], lambda b: mm.batch(b), lambda: [mm.batch(range(s, min(s + 64, rows))) for s in range(0, rows, 64)]),
        "arrow": (lambda i: ar[int(i)], lambda b: ar[b.tolist()], lambda: [ar[s : s + 64] for s in range(0, rows, 64)]),
    }  # fmt: skip
    result = {}
    for name, (single, batch, scan) in readers.items():
        result[f"{name}_random_rows_per_s"] = _rate(lambda f=single: [f(i) for i in singles], n)
        result[f"{name}_batch8_rows_per_s"] = _rate(lambda f=batch: [f(b) for b in batches], batches.size)
        result[f"{name}_scan_rows_per_s"] = _rate(scan, rows)
    return result


def _rate(fn, rows: int) -> float:
    fn()  # warm the page cache, so both formats are compared from memory
    start = time.perf_counter()
    fn()
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[25, 250])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--tokenizer", default="smollm2-135m")
    args = parser.parse_args()

    hu_src, en_src = CORPORA / "hu" / "train.jsonl.gz", CORPORA / "en" / "train.jsonl.gz"
    hu_tpb, en_tpb = tokens_per_byte(hu_src, args.tokenizer), tokens_per_byte(en_src, args.tokenizer)
    print(f"tokens per byte: hu {hu_tpb:.3f}, en {en_tpb:.3f}")
    print("| input MB | tokens packed | wall s | tokens/s (wall) | tokens per CPU-s | peak RSS main MB "
          "| peak RSS all procs MB | epochs hu/en |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    reads = None
    for size in sorted(args.sizes_mb):  # read speed is measured on the smallest run
        with tempfile.TemporaryDirectory(prefix="pack_bench_") as tmp:
            work = Path(tmp)
            half = int(size * 2**20 / 2)
            hu, en = work / "hu.jsonl", work / "en.jsonl"
            write_repeated(hu_src, hu, half)
            write_repeated(en_src, en, half)
            hu_tok, en_tok = half * hu_tpb, half * en_tpb
            # 97% of the estimated tokens: the whole input is read, with slack for the estimate's error.
            r = run_pack(work, hu, en, int(0.97 * (hu_tok + en_tok)), hu_tok / (hu_tok + en_tok), args)
            info = r["info"]
            ep = "/".join(str(info["sources"][s]["epochs"]) for s in ("target", "english"))
            print(f"| {size:g} | {info['tokens']:,} | {r['seconds']:.1f} | {info['tokens'] / r['seconds']:,.0f} "
                  f"| {info['tokens'] / r['cpu_seconds']:,.0f} "
                  f"| {r['peak_main_mb']:.0f} | {r['peak_tree_mb']:.0f} | {ep} |", flush=True)  # fmt: skip
            if reads is None:
                reads = read_speed(r["out"], work)
    print("\nread speed (rows of", args.seq_len, "tokens per second, page cache warm):")
    for key, value in (reads or {}).items():
        print(f"  {key:32s} {value:>12,.0f}")


if __name__ == "__main__":
    main()
