"""lm-evaluation-harness runs the task folders our eval stages write and gets our numbers (GitHub issue 10).

For a tokenizer that adds a BOS (Llama-2 style: SentencePiece BPE + a ``<s> $A`` post-processor) and one
that does not (SmolLM-like byte-level BPE: the document start is ``<|endoftext|>``, its ``bos_token`` is
``<|im_start|>``), the ``eval choice``, ``eval translate`` and ``eval bpb`` stages run on a tiny random
model, then lm-eval (``simple_evaluate``, hf backend, CPU, fp32, ``log_samples=True``) runs the folders
they wrote with the model_args they recorded. Asserted: byte-identical prompts, per-request
log-likelihoods within 1e-4, identical acc / acc_norm / acc_bytes, bits per byte within 1e-6 relative,
identical greedy generations.

Generations: lm-eval has one ``max_gen_toks`` per task (the largest per-item cap of the run), ours one cap
per item, so an output of ours that reached its cap is a prefix of lm-eval's. Our generation is compared
with lm-eval's at the same cap (``translate.generate`` with every cap = ``max_gen_toks``), and the stage's
own outputs with lm-eval's where they ended (newline or EOS) before their cap; the model's newline row is
raised (:func:`newline_prone`) so that some do, after a varying number of tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import tiny

from langadapt import prompts as P
from langadapt.config import ChoiceConfig, EvalConfig, TranslateConfig
from langadapt.eval import lmeval
from langadapt.eval import translate as T
from langadapt.eval.choice import METRICS
from langadapt.eval.common import RESULTS_JSON, SAMPLES_JSONL

pytestmark = pytest.mark.usefixtures("one_thread")


def bos_tokenizer(out: Path, texts: list[str]) -> Path:
    """tiny's SentencePiece-style tokenizer with a post-processor that prepends ``<s>``, and its byte-fallback
    tokens (``<0x0A>``) not special, as in Llama-2's: decoding with skip_special_tokens keeps their bytes."""
    from tokenizers import Tokenizer, processors

    folder = tiny.metaspace_tokenizer(out, texts)
    config = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    for token in config["added_tokens"]:
        token["special"] = token["special"] and not token["content"].startswith("<0x")
    tok = Tokenizer.from_str(json.dumps(config))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])  # fmt: skip
    tok.save(str(folder / "tokenizer.json"))
    return folder


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sentences(texts: list[str], n: int, offset: int = 0) -> list[str]:
    out = []
    for text in texts[offset:]:
        s = " ".join(text.split(".")[0].split())[:48].strip()
        if len(s) > 8 and s not in out:
            out.append(s)
        if len(out) == n:
            return out
    raise AssertionError("not enough sentences")


@pytest.fixture(scope="module", params=["bos", "no-bos"])
def model(request, tmp_path_factory, en_texts, hu_texts) -> Path:
    folder = tmp_path_factory.mktemp(f"lmeval-{request.param}")
    make = bos_tokenizer if request.param == "bos" else tiny.bytelevel_tokenizer
    tok = make(folder / "tok", en_texts + hu_texts[:100])
    return newline_prone(tiny.tiny_model(folder / "model", tok, hidden=48, seed=1, tied=False))


def newline_prone(folder: Path, scale: float = 0.06) -> Path:
    """The model with the head row of its newline token (``Ċ`` / ``\\n``, not the byte-fallback ``<0x0A>``)
    set to a random direction: greedy outputs then end at a newline after a varying number of tokens (a
    random model's almost never do), so the stop rule is exercised."""
    import torch

    from langadapt.models import load_model, load_tokenizer

    model, tok = load_model(folder), load_tokenizer(folder)
    (newline,) = [i for i in P.newline_token_ids(tok)
                  if tok.decode([i]) == "\n" and not tok.convert_ids_to_tokens(i).startswith("<0x")]
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.lm_head.weight[newline] = scale * direction
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory, en_texts, hu_texts) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lmeval-data")
    en, hu = sentences(en_texts, 14), sentences(hu_texts, 14)
    items = [{"question": f"en: {e}\nhu:", "choices": [hu[i], hu[(i + 3) % 14], hu[(i + 7) % 14]],
              "answer": i % 3} for i, e in enumerate(en[:8])]  # fmt: skip
    items[1]["context"] = "Translate.\n"
    items[2]["question"] += "  "  # trailing whitespace moves to the continuation (lm-eval's split)
    items[3]["choices"][1] = "ő ű á é"  # few characters, many bytes: acc_norm and acc_bytes may differ
    pairs = [{"en": e, "hu": h, "split": "valid" if i % 2 else "train"}
             for i, (e, h) in enumerate(zip(en, hu))]  # fmt: skip
    # short documents: lm-eval sums a document's log-likelihood in float32 (~1e-7 relative)
    docs = [" ".join(t.split()[:16]) for t in hu_texts[200:204]] + [en_texts[250][:100], "Rövid. ő"]
    return {"task": write_jsonl(folder / "task.jsonl", items),
            "pairs": write_jsonl(folder / "pairs.jsonl", pairs),
            "heldout": write_jsonl(folder / "heldout.jsonl", [{"text": d} for d in docs])}  # fmt: skip


def lm_eval_run(folder: Path, model_args: str, tasks: list[str]) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model="hf", model_args=model_args, tasks=tasks, device="cpu", batch_size=4,
                           task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                           log_samples=True, bootstrap_iters=0)  # fmt: skip


def only_model(folder: Path) -> dict:
    index = tiny.read_json(folder / lmeval.LMEVAL_DIR / "index.json")
    (entry,) = index["models"]
    return entry


def test_choice_matches_lm_eval(tmp_path, model, data):
    out = tmp_path / "choice"
    cfg = ChoiceConfig(models=[str(model)], task=str(data["task"]), batch_size=5, bf16=False, device="cpu")
    tiny.run_stage("choice", cfg, out)
    entry = only_model(out)
    results = tiny.read_json(out / RESULTS_JSON)["models"][0]
    samples = read_jsonl(out / SAMPLES_JSONL)
    assert entry["token_ids_match"] and entry["doc_start"] == results["doc_start"]
    prefix = "" if results["doc_start_rule"] == "tokenizer prefix" else results["doc_start"]

    (task,) = entry["tasks"]
    theirs = lm_eval_run(out / lmeval.LMEVAL_DIR, entry["model_args"], [task])
    logged = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
    assert len(logged) == len(samples)
    for ours, s in zip(samples, logged):
        # byte-identical prompts and continuations
        assert [a[0] for a in s["arguments"]] == [prefix + ours["prompt"]] * len(ours["choices"])
        assert [a[1] for a in s["arguments"]] == ours["continuations"]
        lls = [r[0][0] for r in s["resps"]]
        assert lls == pytest.approx(ours["logprobs"], abs=1e-4, rel=0)
        assert s["acc"] == float(ours["predicted"] == ours["answer"])
        assert s["acc_norm"] == float(ours["predicted_norm"] == ours["answer"])
        assert s["acc_bytes"] == float(ours["predicted_bytes"] == ours["answer"])
    for metric in METRICS:
        assert theirs["results"][task][f"{metric},none"] == results[metric]


def test_translate_matches_lm_eval(tmp_path, model, data):
    from langadapt.models import load_model, load_tokenizer

    out = tmp_path / "translate"
    cfg = TranslateConfig(models=[str(model)], pairs=str(data["pairs"]), tgt="hu", shots=3, max_items=5,
                          seed=2, directions=["src-tgt", "tgt-src"], max_new_tokens_factor=1.0,
                          max_new_tokens_extra=4, batch_size=2, bf16=False, device="cpu")  # fmt: skip
    tiny.run_stage("translate", cfg, out)
    entry = only_model(out)
    assert entry["token_ids_match"] and len(entry["tasks"]) == 2
    results = tiny.read_json(out / RESULTS_JSON)
    first = results["models"][0]
    prefix = "" if first["doc_start_rule"] == "tokenizer prefix" else first["doc_start"]
    stage_samples = read_jsonl(out / SAMPLES_JSONL)

    theirs = lm_eval_run(out / lmeval.LMEVAL_DIR, entry["model_args"], entry["tasks"])
    model_, tok = load_model(model), load_tokenizer(model)
    ended: list[tuple[str, str]] = []
    for key, task in zip(results["shots"], entry["tasks"]):
        ours = [s for s in stage_samples if s["direction"] == key]
        logged = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
        prompts = [s["prompt"] for s in ours]
        assert [s["arguments"][0][0] for s in logged] == [prefix + p for p in prompts]  # byte-identical
        gen = theirs["configs"][task]["generation_kwargs"]
        cap = gen["max_gen_toks"]
        assert gen["until"] == ["\n"] and gen["do_sample"] is False
        assert cap == max(s["max_new_tokens"] for s in ours)
        # greedy, at the same cap: the same text
        same_cap = P.generate(model_, tok, prompts, [cap] * len(prompts), batch_size=2)
        assert [s["resps"][0][0] for s in logged] == [text for text, _ in same_cap]
        # the stage's outputs that ended before their own cap are lm-eval's
        outputs = [s["filtered_resps"][0] for s in logged]
        assert outputs == [s["resps"][0][0].strip() for s in logged]
        ended += [(o, s["output"]) for o, s in zip(outputs, ours) if not s["truncated"]]
        # the same outputs give the same corpus scores (sacrebleu on both sides)
        scores = T.score(outputs, [s["reference"] for s in ours], n_samples=10)
        for metric in T.METRICS:
            assert theirs["results"][task][f"{metric},strip"] == pytest.approx(scores[metric], abs=1e-9)
        if not any(s["truncated"] for s in ours):
            assert scores["chrf++"] == pytest.approx(first["directions"][key]["chrf++"], abs=1e-9)
    assert ended and all(theirs_ == ours_ for theirs_, ours_ in ended)


def test_bits_per_byte_matches_lm_eval(tmp_path, model, data):
    from langadapt.corpus.readers import read_heldout
    from langadapt.models import load_model, load_tokenizer
    from langadapt.scoring import sequence_nats
    from langadapt.tokenizer.document import document_start, encode_documents

    out = tmp_path / "bpb"
    cfg = EvalConfig(models=[str(model)], target=[str(data["heldout"])], english=[str(data["heldout"])],
                     max_docs=6, batch_size=3, bf16=False, device="cpu")  # fmt: skip
    tiny.run_stage("eval", cfg, out)
    entry = only_model(out)
    assert "add_bos_token=False" in entry["model_args"]
    metrics = tiny.read_json(out / "metrics.json")["models"][0]

    theirs = lm_eval_run(out / lmeval.LMEVAL_DIR, entry["model_args"], entry["tasks"])
    texts = read_heldout({"target": cfg.target}, cfg.max_docs, cfg.text_field)["target"]
    model_, tok = load_model(model), load_tokenizer(model)
    sequences = encode_documents(tok, texts, document_start(tok))
    assert max(len(s) for s in sequences) < cfg.max_len  # one window each: lm-eval's windows are the same
    nats = sequence_nats(model_, sequences, max_len=cfg.max_len, stride=cfg.stride)
    for corpus in ("target", "english"):
        task = f"langadapt_bpb_{corpus}"
        logged = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
        assert [s["arguments"][0][0] for s in logged] == texts
        assert [s["resps"][0][0] for s in logged] == pytest.approx([-n for n in nats], abs=1e-4, rel=0)
        bpb = theirs["results"][task]["bits_per_byte,none"]
        assert math.isclose(bpb, metrics[corpus]["bpb"], rel_tol=1e-6)
