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
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.errors import UserError
from langadapt.runs import atomic_output_dir, mark_done, write_json_atomic, write_stage_json
from langadapt.tokenizer.base import load_base
from langadapt.tokenizer.extend import plan_extension
from langadapt.tokenizer.metrics import fertility_of_each

HELDOUT_EVERY = 10
DEFAULT_THRESHOLD = 0.10


def sweep(
    base: str,
    corpus: list[str],
    sizes: list[int],
    out: Path,
    *,
    english_corpus: list[str] | None = None,
    text_field: str = "text",
    min_frequency: int = 2,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Measure fertility for each number of new tokens in ``sizes``; write sweep.json and sweep.png."""
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] <= 0:
        raise UserError("--sizes must be positive numbers of new tokens")
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        start = time.perf_counter()
        tok = load_base(base)
        paths = check_corpus(corpus, text_field)
        english = check_corpus(english_corpus, text_field) if english_corpus else []

        def split(paths: list[Path], keep_heldout: bool) -> Iterable[str]:
            docs = iter_documents(paths, text_field)
            return (d for i, d in enumerate(docs) if (i % HELDOUT_EVERY == 0) == keep_heldout)

        ext = plan_extension(tok, split(paths, False), num_new_tokens=sizes[-1], min_frequency=min_frequency,
                             english_texts=split(english, False) if english else None)  # fmt: skip
        # Every size's tokenizer reads each held-out corpus in one pass (not once per size).
        tokenizers = [ext.tokenizer(size) for size in [0, *sizes]]
        held = {"target": fertility_of_each(tokenizers, split(paths, True))}
        if english:
            held["english"] = fertility_of_each(tokenizers, split(english, True))
        rows = [{"size": size, "added": len(ext.new_tokens(size)),
                 **{corpus: _figures(stats[k]) for corpus, stats in held.items()}}
                for k, size in enumerate([0, *sizes])]  # fmt: skip
        knee = suggest_size(rows[1:], threshold)
        result = {"base": str(base), "heldout_every": HELDOUT_EVERY, "threshold": threshold,
                  "suggested_size": knee or sizes[-1], "curve_still_falling": knee is None,
                  "rows": rows}  # fmt: skip
        write_json_atomic(tmp / "sweep.json", result)
        plot_sweep(rows, result["suggested_size"], tmp / "sweep.png")
        seconds = time.perf_counter() - start
        write_stage_json(tmp, "sweep", {"base": base, "corpus": corpus, "sizes": sizes,
                                        "english_corpus": english_corpus or [], "text_field": text_field,
                                        "min_frequency": min_frequency}, seconds,
                         suggested_size=result["suggested_size"])  # fmt: skip
        mark_done(tmp)
    print_sweep(result, out)
    return result


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


def print_sweep(result: dict[str, Any], out: Path) -> None:
    print(f"{'new tokens':>10}  {'target tok/word':>15}  {'English tok/word':>16}")
    for r in result["rows"]:
        eng = f"{r['english']['tokens_per_word']:>16.3f}" if "english" in r else f"{'-':>16}"
        print(f"{r['size']:>10}  {r['target']['tokens_per_word']:>15.3f}  {eng}")
    why = (f"every doubling still gains >= {result['threshold']:.0%}: try larger sizes"
           if result["curve_still_falling"] else f"the next doubling gains < {result['threshold']:.0%}")
    print(f"suggested size: {result['suggested_size']} ({why}); {out}/sweep.json, {out}/sweep.png")
