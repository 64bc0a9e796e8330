"""Plot the MinHash-LSH detection curve of corpus prepare's bands x rows (docs/corpus-prepare-curve.png).

python bench/minhash_curve.py [--threshold 0.8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from langadapt.corpus.minhash import detection_probability, minhash_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "corpus-prepare-curve.png"
    )
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.linspace(0, 1, 501)
    fig, ax = plt.subplots(figsize=(6, 4))
    bands, rows = minhash_params(args.threshold)
    for b, r, style in [(bands, rows, "-"), (14, 8, "--"), (20, 10, ":")]:
        label = f"{b} bands x {r} rows ({b * r} hashes)" + (" - chosen" if (b, r) == (bands, rows) else "")
        label += " - datatrove default" if (b, r) == (14, 8) else ""
        ax.plot(s, detection_probability(s, b, r), style, label=label)
    ax.axvline(args.threshold, color="grey", lw=0.8)
    ax.set_xlabel("Jaccard similarity of two documents (5-word shingles)")
    ax.set_ylabel("probability the pair is found")
    ax.set_title(f"MinHash-LSH detection curve, threshold {args.threshold}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)
    for x in (0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        print(
            f"| {x:.2f} | {detection_probability(x, bands, rows):.4f} | {detection_probability(x, 14, 8):.4f} |"
        )


if __name__ == "__main__":
    main()
