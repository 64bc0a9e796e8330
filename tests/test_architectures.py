"""The architecture matrix: tiny random models of the families users adapt, each with its real tokenizer,
through tokenizer extend -> embeddings init -> distill -> data pack -> train pretrain -> sft -> dpo ->
eval bpb; and document masking per architecture (the attention path transformers supports for it).

Per family: base embedding rows bit-identical after init / distill / pretrain (new-embeddings), a tied
head still tied, ``config.vocab_size`` = embedding rows, every saved folder reloads in plain transformers
with nothing missing and with the base model's logits on the base vocabulary (only new rows changed),
and init's English KL small and equal to the KL of the models' own (softcapped) logits.

Run with ``-s`` to see the per-architecture table (KL at init, seconds per stage) for bench/RESULTS.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import tiny
import torch
from safetensors.torch import load_file

from langadapt.config import (
    DistillConfig,
    DpoConfig,
    EvalConfig,
    ExtendConfig,
    InitConfig,
    PackConfig,
    PretrainConfig,  # fmt: skip
    SftConfig,
)
from langadapt.train import masking

pytestmark = pytest.mark.usefixtures("one_thread")

# family -> (real tokenizer, tied head, extra padding rows as the real checkpoints have them)
ARCHITECTURES = {
    "llama": ("llama3", False, 0),  # Llama 3.1 8B: untied, 128,256 rows = tokens
    "mistral": ("mistral-v3", False, 0),
    "qwen2": ("qwen2", True, 271),  # Qwen2.5-0.5B: tied, 151,936 rows for 151,665 tokens
    "qwen3": ("qwen2", False, 271),  # Qwen3-8B: untied, same padding
    "gemma2": ("gemma", True, 0),
    "gemma3_text": ("gemma", True, 0),
    "phi3": ("phi3", False, 53),  # Phi-3-mini: 32,064 rows for 32,011 tokens
    "olmo2": ("gpt2", False, 47),  # OLMo: padded to a multiple of 64
}
FULL_CHAIN = set(ARCHITECTURES)
"""Families that also run sft and dpo: all of them (one step each; trl with a real vocabulary is a few
seconds per family)."""
SLOW_CHAINS = {"qwen2", "qwen3", "gemma2", "gemma3_text"}
"""Chains run with -m slow only (the default suite must stay within ~10 minutes): the 151k and 262k
vocabularies cost 60-90 s a chain. Their tokenizers' extension (test_tokenizer_families), their attention
masking (test_packed_loss_equals_separate_documents) and gemma2's softcapped init stay in the default suite;
the fast chains are llama (Llama-3's 128k vocabulary), mistral, olmo2 and phi3."""
HIDDEN = 16
N_NEW = 40
RESULTS: dict[str, dict] = {}


def _tokenizer(name: str) -> Path:
    """The family's real tokenizer (tests/real_tokenizers.py skips the test when it cannot fetch it)."""
    from real_tokenizers import real_tokenizer

    return real_tokenizer(name)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, hu_texts, en_texts) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("arch_data")
    chats = lambda texts: [{"messages": [{"role": "user", "content": t[:40]}, {"role": "assistant",
                                                                                "content": t[40:120]}]} for t in texts]  # fmt: skip
    pairs = [{"prompt": [{"role": "user", "content": t[:40]}], "chosen": [{"role": "assistant", "content": t[40:100]}],
              "rejected": [{"role": "assistant", "content": en_texts[i + 1][40:100]}]}
             for i, t in enumerate(en_texts[:4])]  # fmt: skip
    for name, rows in (("sft-en", chats(en_texts[:4])), ("sft-hu", chats(hu_texts[:4])), ("pairs", pairs)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {
        "hu": tiny.write_jsonl(d / "hu.jsonl", hu_texts[:60]),
        "en": tiny.write_jsonl(d / "en.jsonl", en_texts[:60]),
        "hu_valid": tiny.write_jsonl(d / "hu-valid.jsonl", [t[:300] for t in hu_texts[200:202]]),
        "en_valid": tiny.write_jsonl(d / "en-valid.jsonl", _probe_texts()),
        "sft_en": d / "sft-en.jsonl", "sft_hu": d / "sft-hu.jsonl", "pairs": d / "pairs.jsonl",
    }  # fmt: skip


@pytest.fixture(scope="module", params=[pytest.param(f, marks=pytest.mark.slow) if f in SLOW_CHAINS else f
                                        for f in ARCHITECTURES])  # fmt: skip
def chain(request, tmp_path_factory, corpora, en_texts) -> dict:
    """One family through every stage; the folders and each stage's record and seconds."""
    family = request.param
    tok_name, tied, extra = ARCHITECTURES[family]
    tok = _tokenizer(tok_name)
    root = tmp_path_factory.mktemp(f"arch-{family}")
    base = tiny.family_model(root / "base", tok, family, tied=tied, extra_rows=extra, hidden=HIDDEN)
    c = {k: str(v) for k, v in corpora.items()}
    out = {"family": family, "tokenizer": tok_name, "base": base, "dirs": {}, "records": {}, "seconds": {}}

    def stage(name: str, cfg, folder: str) -> Path:
        started = time.perf_counter()
        out["records"][name] = tiny.run_stage(name, cfg, root / folder)
        out["seconds"][name] = time.perf_counter() - started
        out["dirs"][name] = root / folder
        return root / folder

    ext = stage("extend", ExtendConfig(base=str(base), corpus=[c["hu"]], num_new_tokens=N_NEW,
                                       english_corpus=[c["en"]]), "tokenizer")  # fmt: skip
    init = stage("init", InitConfig(model=str(base), tokenizer=str(ext), kl_corpus=[c["en_valid"]], kl_max_docs=2,
                                    bf16=False, device="cpu"), "init")  # fmt: skip
    distill = stage("distill", DistillConfig(model=str(init), teacher=str(base), corpus=[c["hu"]], steps=2,
                                             calibrate_steps=1, batch_size=2, seq_len=32, bf16=False,
                                             device="cpu", report_to="none"), "distill")  # fmt: skip
    packed = stage("pack", PackConfig(tokenizer=str(ext), target=[c["hu"]], english=[c["en"]], seq_len=64,
                                      tokens=1024, workers=1), "packed")  # fmt: skip
    stage("pretrain", PretrainConfig(model=str(distill), data=str(packed), train="new-embeddings", lr=1e-2,
                                     micro_batch=2, max_steps=2, bf16=False, device="cpu", report_to="none"),
          "pretrain")  # fmt: skip
    models = [base, init, distill, root / "pretrain" / "final"]
    if family in FULL_CHAIN:
        sft = stage("sft", SftConfig(model=str(models[-1]), data=[c["sft_en"]], translated=[c["sft_hu"]], ratio=0.5,
                                     max_steps=1, micro_batch=2, max_length=64, lr=1e-3, bf16=False, device="cpu",
                                     report_to="none"), "sft")  # fmt: skip
        models.append(sft / "final")
        dpo = stage("dpo", DpoConfig(model=str(models[-1]), data=[c["pairs"]], ratio=0.0, max_steps=1, micro_batch=2,
                                     max_length=64, lr=1e-3, eval_pairs=2, bf16=False, device="cpu",
                                     report_to="none"), "dpo")  # fmt: skip
        models.append(dpo / "final")
    # base and final only: each model evaluated is a vocabulary-sized softmax per position
    stage("eval", EvalConfig(models=[str(models[0]), str(models[-1])], target=[c["hu_valid"]], english=[c["en_valid"]],
                             max_docs=2, max_len=64, stride=32, device="cpu"), "eval")  # fmt: skip
    out["models"] = models
    RESULTS[family] = out
    return out


# ------------------------------------------------------------------------------------------- helpers


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _reload(folder: Path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def _probe_texts() -> list[str]:
    """init's KL corpus here (short: real vocabularies make every probe position a 128k-262k softmax)."""
    return [t[:300] for t in tiny.demo_texts("en", n=202)[200:202]]


def _english_ids(base: Path, n: int = 48) -> torch.Tensor:
    from transformers import AutoTokenizer

    text = tiny.demo_texts("en", "valid", 1)[0]
    ids = AutoTokenizer.from_pretrained(base)(text, add_special_tokens=False)["input_ids"][:n]
    return torch.tensor([ids])


# --------------------------------------------------------------------------------------------- tests


def test_base_rows_stay_bit_identical(chain):
    """init, distill and pretrain (new-embeddings) never write a base row, input or output matrix."""
    before = _weights(chain["base"])
    n_base = chain["records"]["init"]["n_base"]
    keys = [k for k in ("model.embed_tokens.weight", "lm_head.weight") if k in before]
    assert keys
    for stage in ("init", "distill", "pretrain"):
        folder = chain["dirs"][stage] / ("final" if stage == "pretrain" else "")
        after = _weights(folder)
        for k in keys:
            assert torch.equal(after[k][:n_base], before[k][:n_base]), (stage, k)
    assert chain["records"]["distill"]["frozen_rows_unchanged"]
    assert chain["records"]["pretrain"]["frozen_rows_unchanged"]


def test_saved_folders_tied_sized_and_reload_with_the_base_logits(chain):
    """Every saved folder: the head tied as in the base, config.vocab_size = rows of both matrices, a clean
    reload in plain transformers; init / distill / pretrain (base rows and layers untouched) give the base
    model's logits on the base vocabulary."""
    tied = ARCHITECTURES[chain["family"]][1]
    n_base = chain["records"]["init"]["n_base"]
    ids = _english_ids(chain["base"])
    base = _reload(chain["base"])
    with torch.no_grad():
        expected = base(input_ids=ids).logits[..., :n_base]
    for folder in chain["models"][1:]:
        model = _reload(folder)
        config = json.loads((folder / "config.json").read_text())
        rows_in = model.get_input_embeddings().weight.shape[0]
        assert config["vocab_size"] == rows_in == model.get_output_embeddings().weight.shape[0], folder
        assert rows_in >= chain["records"]["init"]["n_ext"]
        assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied, folder
        assert bool(config.get("tie_word_embeddings")) == tied
        if tied:
            assert "lm_head.weight" not in _weights(folder)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        assert logits.shape[-1] == rows_in and torch.isfinite(logits).all()
        if folder.parent.name not in ("sft", "dpo"):
            torch.testing.assert_close(logits[..., :n_base], expected, rtol=0, atol=1e-5)


def test_init_kl_is_small_and_is_the_models_own(chain):
    """init's English KL (new output rows take little mass) equals the KL of the base and the initialised
    models' own logits (softcapped where the model caps them) on the probe text."""
    record = chain["records"]["init"]
    kl = _forward_kl(chain["base"], chain["dirs"]["init"], _probe_texts())
    assert record["english_kl"] == pytest.approx(kl, rel=1e-3, abs=1e-7)
    assert record["logit_softcap"] == (30.0 if chain["family"] == "gemma2" else None)
    # random models have no shared hidden direction (no shift): the new rows' mass is about their share
    share = record["new_token_rows"] / record["n_ext"]
    assert record["english_new_token_mass"] < 3 * share + 1e-3
    assert record["english_kl"] < 3 * share + 1e-3
    # random padding rows (the base's, and zero rows where there is no low direction) take their share too
    padding = (record["rows_after"] - record["n_ext"]) / record["rows_after"]
    assert record["english_padding_mass"] < 3 * padding + 1e-3


def _forward_kl(base_dir: Path, ext_dir: Path, texts: list[str]) -> float:
    """Mean KL(base || extended) over every position of ``texts`` read as init's probe reads them."""
    from langadapt.models import load_tokenizer
    from langadapt.tokenizer.document import document_start, encode_documents

    base, ext = _reload(base_dir), _reload(ext_dir)
    tokenizer = load_tokenizer(base_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in encode_documents(tokenizer, texts, document_start(tokenizer)):
            x = torch.tensor([ids[:512]])
            lp_b = torch.log_softmax(base(input_ids=x).logits[0].float(), -1)
            lp_e = torch.log_softmax(ext(input_ids=x).logits[0].float(), -1)
            total += (lp_b.exp() * (lp_b - lp_e[:, : lp_b.shape[-1]])).sum().item()
            count += x.shape[1]
    return total / count


def test_eval_and_alignment_ran(chain):
    metrics = json.loads((chain["dirs"]["eval"] / "metrics.json").read_text())
    assert len(metrics["models"]) == 2
    for m in metrics["models"]:
        assert m["target"]["bpb"] > 0 and m["english"]["bpb"] > 0
    attention = chain["records"]["pretrain"]["attention"]
    assert attention == ("eager" if chain["family"] == "gemma2" else "sdpa")
    for stage in ("sft", "dpo"):
        if stage in chain["records"]:
            assert chain["records"][stage]["steps"] == 1
            assert chain["records"][stage]["attention"] == attention


# -------------------------------------------------------------------- document masking per architecture

DOC_LENGTHS = [[7, 1, 20, 12], [40], [3, 3, 3, 31]]


@pytest.mark.parametrize("family", [*ARCHITECTURES, "mistral-window", "gemma2-window"])
def test_packed_loss_equals_separate_documents(family):
    """With the path ``auto`` picks for the architecture (eager for Gemma 2, its softcapped attention still
    masked) and the model's sliding windows, a packed row's loss and gradients are those of its
    documents run one by one. The ``-window`` variants shrink the window below the documents' length
    (Mistral v0.1 style: one window; Gemma 2: local and global layers)."""
    from transformers import AutoModelForCausalLM

    name, _, window = family.partition("-")
    overrides = {"sliding_window": 8} if window else {}
    torch.manual_seed(0)
    config = tiny.family_config(name, 97, hidden=32, tied=name.startswith("gemma"), **overrides)
    model = AutoModelForCausalLM.from_config(config).float()
    path = masking.choose_attention("auto", torch.device("cpu"), model)
    assert path == ("eager" if name == "gemma2" else "sdpa")
    model.set_attn_implementation(masking.HF_IMPLEMENTATION[path])
    model.train()  # dropout is 0; train mode is where a cache would silently unmask documents

    torch.manual_seed(1)
    docs = [[torch.randint(0, 97, (n,)) for n in row] for row in DOC_LENGTHS]
    ids = torch.stack([torch.cat(row) for row in docs])
    pos = torch.stack([torch.cat([torch.arange(len(d)) for d in row]) for row in docs])
    kwargs = masking.forward_kwargs(path, ids, pos, model.config)
    packed = model(**kwargs).loss
    packed.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    total, count = 0.0, 0
    for row in docs:
        for d in row:
            if len(d) > 1:
                logits = model(input_ids=d[None], use_cache=False).logits[0, :-1]
                total = total + torch.nn.functional.cross_entropy(logits, d[1:], reduction="sum")
                count += len(d) - 1
    separate = total / count
    separate.backward()
    torch.testing.assert_close(packed, separate, rtol=0, atol=1e-5)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_explicit_sdpa_is_refused_for_gemma2():
    from transformers import Gemma2ForCausalLM

    from langadapt.errors import UserError

    with pytest.raises(UserError, match="does not support"):
        masking.choose_attention("sdpa", torch.device("cpu"), Gemma2ForCausalLM)
    assert masking.choose_attention("auto", torch.device("cpu"), Gemma2ForCausalLM) == "eager"


# ------------------------------------------------------------------------- softcapping and the shift


def test_softcapped_new_rows_start_two_nats_low(tmp_path, bytelevel_tok, hu_texts, en_texts):
    """A Gemma 2 whose logits reach the cap's curved range (scaled head, a shared hidden direction, as in
    trained models): init's remedy lowers each new row's *capped* logit by 2 nats on average, and the
    recorded KL is the one of the model's own capped logits."""
    import ext_tok
    from transformers import AutoModelForCausalLM

    from langadapt.embeddings.init import init_embeddings

    base_dir = tiny.family_model(tmp_path / "base", bytelevel_tok, "gemma2", tied=True, hidden=32)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        shared = torch.randn(w.shape[1])
        w.mul_(60.0).add_(3.0 * shared)  # logits of tens of nats; every state shares a direction
    model.save_pretrained(base_dir)
    tok = ext_tok.extend_tokenizer(bytelevel_tok, hu_texts, tmp_path / "ext", 60)
    kl_file = tiny.write_jsonl(tmp_path / "kl.jsonl", _probe_texts())
    record = init_embeddings(InitConfig(model=str(base_dir), tokenizer=str(tok), kl_corpus=[str(kl_file)],
                                        kl_max_docs=2, bf16=False, device="cpu"), tmp_path / "init")  # fmt: skip
    assert record["logit_softcap"] == 30.0 and record["output_remedy"] == "shift"
    assert record["english_kl"] == pytest.approx(_forward_kl(base_dir, tmp_path / "init", _probe_texts()), rel=1e-3)  # fmt: skip

    # the capped drop of each new row, measured with the model's own logits against the unshifted rows
    none_dir = tmp_path / "init-none"
    init_embeddings(InitConfig(model=str(base_dir), tokenizer=str(tok), kl_corpus=[str(kl_file)], kl_max_docs=2,
                               output_remedy="none", bf16=False, device="cpu"), none_dir)  # fmt: skip
    ids = _english_ids(base_dir, 64)
    n_base, n_ext = record["n_base"], record["n_ext"]
    with torch.no_grad():
        shifted = _reload(tmp_path / "init")(input_ids=ids).logits[0, :, n_base:n_ext]
        plain = _reload(none_dir)(input_ids=ids).logits[0, :, n_base:n_ext]
    drop = (plain - shifted).mean(0)  # per new row, over positions
    assert plain.abs().max() > 10  # the cap's curved range is reached
    assert drop.mean().item() == pytest.approx(2.0, abs=0.25)
    RESULTS["gemma2 (large logits, shift)"] = {"records": {"init": record}, "seconds": {}, "tokenizer": "test",
                                               "capped_drop": drop.mean().item()}  # fmt: skip


def test_print_table():
    """The per-architecture figures (run with -s) for bench/RESULTS.md."""
    if not RESULTS:
        pytest.skip("no architecture ran")
    print("\n| architecture | tokenizer | n_base | rows after | tied | softcap | English KL at init | new-token mass |"
          " seconds per stage |")  # fmt: skip
    print("|---|---|---:|---:|---|---|---:|---:|---|")
    for family, r in RESULTS.items():
        init = r["records"]["init"]
        secs = ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items())
        print(f"| {family} | {r['tokenizer']} | {init['n_base']} | {init['rows_after']} | {init['tied']} | "
              f"{init['logit_softcap']} | {init['english_kl']:.3g} | {init['english_new_token_mass']:.3g} | {secs} |")
