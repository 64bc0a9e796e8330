"""MinHash-LSH parameters of ``corpus prepare``: bands x rows from a Jaccard threshold, and the detection
curve they give (docs/corpus-prepare.md). Plain arithmetic: no datatrove, imported by plan.py and card.py.
"""

from __future__ import annotations

from typing import Any

from langadapt.config import PrepareConfig
from langadapt.errors import UserError


def detection_probability(s: Any, bands: int, rows: int) -> Any:
    """Probability that a pair with Jaccard similarity ``s`` shares at least one band (float or array)."""
    return 1 - (1 - s**rows) ** bands


def minhash_params(threshold: float) -> tuple[int, int]:
    """(bands, rows) for LSH at ``threshold``: the fewest hashes for which a pair at threshold + 0.1 is
    found with probability >= 0.99 and a pair at threshold - 0.3 with probability <= 0.01, and among
    those the one closest to 1/2 at the threshold. 0.8 gives 13 x 11."""
    hi, lo = min(threshold + 0.1, 0.97), max(threshold - 0.3, 0.05)
    best = None
    for bands in range(1, 257):
        for rows in range(1, 41):
            if bands * rows > 1024:
                break
            found_hi = detection_probability(hi, bands, rows) >= 0.99
            if found_hi and detection_probability(lo, bands, rows) <= 0.01:
                key = (bands * rows, abs(detection_probability(threshold, bands, rows) - 0.5))
                if best is None or key < best[0]:
                    best = (key, bands, rows)
    if best is None:
        raise UserError(f"no MinHash bands/rows reach minhash_threshold {threshold}; set them by hand")
    return best[1], best[2]


def minhash_bands_rows(cfg: PrepareConfig) -> tuple[int, int]:
    """The (bands, rows) a run uses: set explicitly, or derived from the threshold."""
    if cfg.minhash_buckets:
        return cfg.minhash_buckets, cfg.minhash_rows
    return minhash_params(cfg.minhash_threshold)


def minhash_record(cfg: PrepareConfig) -> dict | None:
    """What stage.json and the data card say about MinHash: shingles, bands x rows, the detection curve."""
    if not cfg.minhash_dedup:
        return None
    bands, rows = minhash_bands_rows(cfg)
    curve = {f"{s:.1f}": round(detection_probability(s, bands, rows), 4) for s in (0.5, 0.6, 0.7, 0.8, 0.9)}
    return {"ngrams": cfg.minhash_ngrams, "bands": bands, "rows": rows, "hashes": bands * rows,
            "detection_probability": curve}  # fmt: skip
