"""``langadapt tokenizer sweep``: fertility against the number of added tokens, and a suggested size.

One merge-learning run for the largest size serves every size, since the first k new tokens and their
merges are exactly a k-token extension. Fertility is measured on documents held out from that learning
(every ``HELDOUT_EVERY``-th document), because in-sample fertility keeps improving by memorising rare
words and so favours too large a vocabulary.

The suggestion: the smallest size after which doubling the number of new tokens lowers target tokens
per word by less than ``threshold`` (default 10%, relative, per doubling). DictaLM 2.0 chose its 1,000
Hebrew tokens from such a curve. Past that knee each doubling costs as many new embedding rows (to
initialise and train, with little data per row) as all the tokens before it, for under a tenth fewer
tokens. When even the last step gains more, the largest size is suggested and flagged as such.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langadapt.config import SweepConfig
from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.runs import read_json, write_json_atomic
from langadapt.tokenizer.base import load_base
from langadapt.tokenizer.extend import plan_extension
from langadapt.tokenizer.metrics import fertility_of_each

HELDOUT_EVERY = 10
SWEEP_JSON = "sweep.json"


def sweep(cfg: SweepConfig, out: Path) -> dict[str, Any]:
    """Stage entry: fertility for each number of new tokens in ``cfg.sizes``; sweep.json and sweep.png."""
    sizes = sorted(set(cfg.sizes))
    out = Path(out)
    tok = load_base(cfg.base)
    paths = check_corpus(cfg.corpus, cfg.text_field)
    english = check_corpus(cfg.english_corpus, cfg.text_field) if cfg.english_corpus else []

    def split(paths: list[Path], keep_heldout: bool) -> Iterable[str]:
        docs = iter_documents(paths, cfg.text_field)
        return (d for i, d in enumerate(docs) if (i % HELDOUT_EVERY == 0) == keep_heldout)

    ext = plan_extension(tok, split(paths, False), num_new_tokens=sizes[-1], min_frequency=cfg.min_frequency,
                         english_texts=split(english, False) if english else None)  # fmt: skip
    # Every size's tokenizer reads each held-out corpus in one pass (not once per size).
    tokenizers = [ext.tokenizer(size) for size in [0, *sizes]]
    held = {"target": fertility_of_each(tokenizers, split(paths, True))}
    if english:
        held["english"] = fertility_of_each(tokenizers, split(english, True))
    rows = [{"size": size, "added": len(ext.new_tokens(size)),
             **{corpus: _figures(stats[k]) for corpus, stats in held.items()}}
            for k, size in enumerate([0, *sizes])]  # fmt: skip
    knee = suggest_size(rows[1:], cfg.threshold)
    result = {"base": str(cfg.base), "heldout_every": HELDOUT_EVERY, "threshold": cfg.threshold,
              "suggested_size": knee or sizes[-1], "curve_still_falling": knee is None,
              "rows": rows}  # fmt: skip
    write_json_atomic(out / SWEEP_JSON, result)
    plot_sweep(rows, result["suggested_size"], out / "sweep.png")
    return {"suggested_size": result["suggested_size"]}


def _figures(stats: dict[str, Any]) -> dict[str, float]:
    return {k: stats[k] for k in ("tokens_per_word", "tokens_per_char", "bytes_per_token")}


def suggest_size(rows: list[dict[str, Any]], threshold: float) -> int | None:
    """The first size whose next step gains less than ``threshold`` per doubling (None: none does)."""
    for a, b in itertools.pairwise(rows):
        before, after = a["target"]["tokens_per_word"], b["target"]["tokens_per_word"]
        doublings = math.log2(b["size"] / a["size"])
        if before <= 0 or doublings <= 0:
            continue
        # Relative gain per doubling, so uneven size steps compare fairly.
        gain = 1 - (after / before) ** (1 / doublings)
        if gain < threshold:
            return a["size"]
    return None


def plot_sweep(rows: list[dict[str, Any]], suggested: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    base, sized = rows[0], rows[1:]
    xs = [r["size"] for r in sized]
    for key, label, style in (("target", "target", "o-"), ("english", "English", "s-")):
        if key in base:
            line = ax.plot(xs, [r[key]["tokens_per_word"] for r in sized], style, label=label)[0]
            ax.axhline(base[key]["tokens_per_word"], color=line.get_color(), linestyle="--", linewidth=0.8,
                       label=f"{label}, base tokenizer")  # fmt: skip
    ax.axvline(suggested, color="grey", linestyle=":", label=f"suggested: {suggested}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("new tokens")
    ax.set_ylabel("tokens per word (held-out documents)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_sweep(record: dict[str, Any], out: Path) -> None:
    """The curve and the suggestion (from ``out/sweep.json``)."""
    result = read_json(Path(out) / SWEEP_JSON)
    print(f"{'new tokens':>10}  {'target tok/word':>15}  {'English tok/word':>16}")
    for r in result["rows"]:
        eng = f"{r['english']['tokens_per_word']:>16.3f}" if "english" in r else f"{'-':>16}"
        print(f"{r['size']:>10}  {r['target']['tokens_per_word']:>15.3f}  {eng}")
    why = (f"every doubling still gains >= {result['threshold']:.0%}: try larger sizes"
           if result["curve_still_falling"] else f"the next doubling gains < {result['threshold']:.0%}")
    print(f"suggested size: {result['suggested_size']} ({why}); {out}/sweep.json, {out}/sweep.png")
