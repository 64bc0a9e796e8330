"""Generation speed of SmolLM2-135M against its +8,000-Hungarian-token adaptation, in transformers and in
llama.cpp, target language and English (issue 18): the ``eval speed`` stage on real models.

    python bench/speed_bench.py                                   # the demo's adapted model, 2 threads
    python bench/speed_bench.py --adapted runs/x/pretrain/final --threads 8 --words 64 --repeats 5

The adapted model is ``--adapted``, else ``runs/demo-hu/pretrain/final`` when it exists, else one built
here in a minute: ``tokenizer extend`` (+8,000 tokens on ../shared/corpora/hu/train.jsonl.gz) and
``embeddings init`` (untrained new rows: fertility, hence the number of decoding steps, is already the
adapted one; the speed does not depend on how well the rows are trained, only what they generate does).
Both models are converted to f16 GGUFs once (llama.cpp's converter, cached in the work folder) and given
to the stage with ``gguf``. The stage runs ``--rounds`` times; every figure printed is the median over
rounds, each round timing the fastest of ``--repeats`` per prompt. The markdown table at the end is the
one bench/RESULTS.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpora"
DEMO_DATA = REPO / "src" / "langadapt" / "demo_data"


def heldout() -> tuple[str, str]:
    """Held-out Hungarian and English: the shared corpora's valid splits, else the packaged demo text."""
    hu, en = SHARED / "hu" / "valid.jsonl.gz", SHARED / "en" / "valid.jsonl.gz"
    if hu.is_file() and en.is_file():
        return str(hu), str(en)
    return str(DEMO_DATA / "hu-valid.jsonl.gz"), str(DEMO_DATA / "en-valid.jsonl.gz")


def adapted_model(work: Path, given: str) -> Path:
    """The adapted model (see the module doc)."""
    from langadapt.config import ExtendConfig, InitConfig
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    if given:
        return Path(given)
    demo = REPO / "runs" / "demo-hu" / "pretrain" / "final"
    if (demo / "config.json").is_file():
        return demo
    corpus = SHARED / "hu" / "train.jsonl.gz"
    english = SHARED / "en" / "train.jsonl.gz"
    run_stage(BY_NAME["extend"], ExtendConfig(base="smollm2-135m", corpus=[str(corpus)], num_new_tokens=8000,
                                              english_corpus=[str(english)]), work / "tokenizer")  # fmt: skip
    run_stage(BY_NAME["init"], InitConfig(model="smollm2-135m", tokenizer=str(work / "tokenizer"),
                                          kl_corpus=[heldout()[1]], kl_max_docs=4), work / "model")  # fmt: skip
    return work / "model"


def gguf_of(model: str, out: Path, llama_cpp: str) -> Path:
    """An f16 GGUF of ``model``, converted once into ``out``."""
    from langadapt.llamacpp.convert import convert
    from langadapt.llamacpp.sources import find_llama_cpp
    from langadapt.models import resolve_model

    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_suffix(".scratch")
    scratch.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp.gguf")
    started = time.perf_counter()
    convert(find_llama_cpp(llama_cpp), resolve_model(model), tmp, "f16", scratch=scratch,
            log=out.with_suffix(".log"))  # fmt: skip
    os.replace(tmp, out)
    print(f"converted {model} -> {out} in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapted", default="", help="adapted model folder (default: see above)")
    ap.add_argument("--work", default="/tmp/langadapt-speed-bench", help="work folder (GGUFs, results)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--words", type=int, default=32)
    ap.add_argument("--per-language", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU seconds (with --threads 1: steady on a shared machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", choices=("auto", "yes", "no"), default="no",
                    help="transformers weights in bf16 (default fp32: the f16 GGUF's nearest CPU equivalent)")
    ap.add_argument("--llama-cpp", default=os.environ.get("LANGADAPT_LLAMA_CPP", ""),
                    help="llama.cpp converter source (llama-cpp-python archive or folder)")
    ap.add_argument("--llama-lib", default=os.environ.get("LLAMA_CPP_LIB_PATH", ""), help="libllama file or folder")
    ap.add_argument("--runtimes", nargs="+", default=["transformers", "llamacpp"])
    args = ap.parse_args()

    from langadapt.config import SpeedConfig
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = ["smollm2-135m", str(adapted_model(work, args.adapted))]
    print(f"models: {models}", flush=True)
    ggufs = []
    if "llamacpp" in args.runtimes:
        ggufs = [str(gguf_of(m, work / "gguf" / f"{i}-f16.gguf", args.llama_cpp)) for i, m in enumerate(models)]
    hu, en = heldout()
    bf16 = {"auto": None, "yes": True, "no": False}[args.bf16]
    rounds = []
    for r in range(args.rounds):
        out = work / f"round-{r}"
        cfg = SpeedConfig(models=models, target=[hu], english=[en], tgt="hu", per_language=args.per_language,
                          words=args.words, repeats=args.repeats, threads=args.threads, device=args.device,
                          clock=args.clock,
                          bf16=bf16, runtimes=args.runtimes, gguf=ggufs, llama_cpp=args.llama_cpp,
                          llama_lib=args.llama_lib)  # fmt: skip
        started = time.perf_counter()
        record = run_stage(BY_NAME["speed"], cfg, out)
        if record.get("skipped"):
            print(f"round {r}: {out} already finished (delete it to measure again)")
        rounds.append(json.loads((out / "results.json").read_text(encoding="utf-8")))
        print(f"round {r}: {time.perf_counter() - started:.0f} s, llama.cpp {record.get('llamacpp')}", flush=True)
    report(rounds, args)


def report(rounds: list[dict], args: argparse.Namespace) -> None:
    """The markdown table (medians over rounds) and the settings it was measured with."""
    first = rounds[0]
    names = {"transformers": "transformers", "llamacpp": "llama.cpp"}
    texts = {"target": "Hungarian", "english": "English"}
    header = ("| runtime | text | model | words/s | tokens/s | tokens/word held-out | steps/word generated | "
              "ratio | limit | closeness |")  # fmt: skip
    lines = [header, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for runtime, rname in names.items():
        for corpus, cname in texts.items():
            for i, m in enumerate(first["models"]):
                if corpus not in m["runtimes"].get(runtime, {}):
                    continue
                got = [r["models"][i]["runtimes"][runtime][corpus] for r in rounds]
                comp = [next((c for c in r["comparisons"] if (c["runtime"], c["corpus"], c["label"]) ==
                              (runtime, corpus, m["label"])), {}) for r in rounds]  # fmt: skip

                def fmt(v: float | None, d: int) -> str:
                    return "—" if v is None else f"{v:.{d}f}"

                lines.append(f"| {rname} | {cname} | {m['label']} | {fmt(median([g['words_per_s'] for g in got]), 1)} | "
                             f"{fmt(median([g['tokens_per_s'] for g in got]), 1)} | "
                             f"{fmt(m['heldout'][corpus]['tokens_per_word'], 3)} | "
                             f"{fmt(median([g['steps_per_word'] for g in got]), 3)} | "
                             f"{fmt(median([c.get('ratio') for c in comp]), 2)} | "
                             f"{fmt(median([c.get('limit') for c in comp]), 2)} | "
                             f"{fmt(median([c.get('closeness') for c in comp]), 2)} |")  # fmt: skip
    s = first["settings"]
    print()
    print("\n".join(lines))
    print()
    print(f"settings: {s['words']} words after each of {s['per_language']} prompts per language "
          f"({s['prompt_words']} words each), fastest of {s['repeats']} per prompt by the {s.get('clock')} clock, "
          f"{len(rounds)} round(s) "
          f"(medians), {s['threads']} threads, transformers {s.get('transformers_dtype')} on {s['device']}, "
          f"llama.cpp {first['runtimes']['llamacpp'].get('status')} "
          f"({first['runtimes']['llamacpp'].get('reason') or first['runtimes']['llamacpp'].get('source', '')})")  # fmt: skip
    print(f"models: {[m['model'] for m in first['models']]}; command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
