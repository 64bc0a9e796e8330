"""train sft / train dpo on trl: assistant-only labels, packed = unpacked log-probs, chat templates that add
no token, row freezing and LoRA, DPO's margin and reference, resume, bad input through the CLI."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import tiny
import torch

from langadapt.config import DpoConfig, SftConfig
from langadapt.errors import UserError
from langadapt.runs import work_folder

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = 500
"""Rows >= BASE count as added by `tokenizer extend` in the extended-model fixtures."""


def _chat(user: str, reply: str, system: str | None = None) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _pairs(texts: list[str]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": t[:40]}], "chosen": [{"role": "assistant", "content": t[40:100]}],
             "rejected": [{"role": "assistant", "content": texts[(i + 1) % len(texts)][40:100]}]}
            for i, t in enumerate(texts)]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory, en_texts, hu_texts) -> dict[str, str]:
    d = tmp_path_factory.mktemp("align_data")
    en = [_chat(t[:40], t[40:140]) for t in en_texts[:24]]
    en.append({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"},
                            {"role": "assistant", "content": "Hello again."}]})  # fmt: skip
    return {
        "en": _jsonl(d / "en.jsonl", en),
        "hu": _jsonl(d / "hu.jsonl", [_chat(t[:40], t[40:140]) for t in hu_texts[:24]]),
        "pairs": _jsonl(d / "pairs.jsonl", _pairs(en_texts[:8])),
        "pairs_hu": _jsonl(d / "pairs-hu.jsonl", _pairs(hu_texts[:8])),
        "eval_en": str(tiny.write_jsonl(d / "en-valid.jsonl", tiny.demo_texts("en", "valid", 3))),
    }


def _extended(src: Path, dst: Path) -> Path:
    """A copy of a tiny model whose rows >= BASE count as new (extension.json)."""
    shutil.copytree(src, dst)
    (dst / "extension.json").write_text(json.dumps({"base_vocab_size": BASE}))
    return dst


def _sft(model: Path, data: dict, **kw) -> SftConfig:
    base = {"model": str(model), "data": [data["en"]], "translated": [data["hu"]], "ratio": 0.5, "max_steps": 2,
            "micro_batch": 2, "lr": 1e-3, "bf16": False, "device": "cpu"}
    return SftConfig(**{**base, **kw})


def _dpo(model: Path, data: dict, **kw) -> DpoConfig:
    base = {"model": str(model), "data": [data["pairs"]], "ratio": 0.0, "max_steps": 2, "micro_batch": 8,
            "lr": 1e-3, "warmup": 0, "scheduler": "constant", "eval_pairs": 8, "bf16": False, "device": "cpu"}
    return DpoConfig(**{**base, **kw})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


# ----------------------------------------------------------------------------------- chat template


def test_chat_templates_render_without_adding_tokens(bytelevel_tok, metaspace_tok, tmp_path):
    from transformers import AutoTokenizer

    from langadapt.train.chat import ensure_template, renders_like, training_template

    talk = _chat("Hol van a fájl?", "A Dokumentumok mappában.", system="Légy rövid.")["messages"]
    talk += [{"role": "user", "content": "Köszönöm"}, {"role": "assistant", "content": "Szívesen!"}]
    for folder in (bytelevel_tok, metaspace_tok):
        tok = AutoTokenizer.from_pretrained(folder)
        vocab, base = tok.get_vocab(), tok.chat_template
        marked, how = training_template(tok)  # the base ChatML template, marked
        assert how.startswith("ChatML") and renders_like(tok, marked, base)
        tok.chat_template = None
        assert ensure_template(tok) == "sambalingo"
        text = tok.apply_chat_template(talk[:-1], tokenize=False, add_generation_prompt=True)
        assert text.startswith("<|system|>\nLégy rövid.") and text.endswith(f"<|user|>\nKöszönöm{tok.eos_token}\n"
                                                                           "<|assistant|>\n")  # fmt: skip
        out = tok.apply_chat_template(talk, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = out["input_ids"], out["assistant_masks"]
        assert tok.get_vocab() == vocab and max(ids) < len(vocab)  # nothing added
        assert tok.decode(ids) == tok.apply_chat_template(talk, tokenize=False)  # spelled with existing tokens
        assert tok.decode([i for i, m in zip(ids, mask) if m]) == f"A Dokumentumok mappában.{tok.eos_token}Szívesen!{tok.eos_token}"
        assert training_template(tok)[1] == "base (has generation markers)"
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(UserError, match="chat_template"):
        training_template(tok)
    no_markers = tmp_path / "t.jinja"
    no_markers.write_text(tok.chat_template)
    with pytest.raises(UserError, match="no \\{% generation %\\}"):
        training_template(tok, no_markers)


# ---------------------------------------------------------------------------------------------- SFT


def test_sft_labels_only_the_assistant_turns(tmp_path, tiny_tied, data):
    from langadapt.train.sft import build_trainer

    trainer, s, mix = build_trainer(_sft(tiny_tied, data), tmp_path / "w")
    assert mix["english_examples"] + mix["translated_examples"] == len(trainer.train_dataset) == mix["examples"]
    tok = s.tokenizer
    for row in trainer.train_dataset:
        ids, labels = row["input_ids"], row["labels"]
        assert all(lab in (-100, i) for i, lab in zip(ids, labels))
        replies = "".join(m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant")
        assert tok.decode([i for i, lab in zip(ids, labels) if lab != -100]) == replies
        unlabelled = tok.decode([i for i, lab in zip(ids, labels) if lab == -100])
        assert all(m["content"] in unlabelled for m in row["messages"] if m["role"] != "assistant")


def test_packed_rows_give_the_log_probs_of_unpacked_examples(tmp_path, tiny_tied, data):
    """trl's bfd packing on SDPA: the position ids reset per example and transformers masks across them."""
    from langadapt.train.sft import build_trainer

    trainer, s, _ = build_trainer(_sft(tiny_tied, data, packing=True, max_length=512), tmp_path / "w")
    model = s.model.eval()
    assert model.config._attn_implementation == "sdpa"
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert "attention_mask" not in batch and (batch["position_ids"] == 0).sum() >= 3  # several examples per row
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = torch.log_softmax(model(**inputs).logits[0].float(), -1)
        ids, pos = batch["input_ids"][0], batch["position_ids"][0]
        starts = [*torch.nonzero(pos == 0).flatten().tolist(), len(ids)]
        for a, b in itertools.pairwise(starts):
            alone = torch.log_softmax(model(input_ids=ids[None, a:b]).logits[0].float(), -1)
            got = packed[a : b - 1].gather(1, ids[a + 1 : b, None])
            want = alone[:-1].gather(1, ids[a + 1 : b, None])
            torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_tied, data) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sft") / "sft"
    return out, tiny.run_stage("sft", _sft(tiny_tied, data, max_steps=3, eval_english=[data["eval_en"]]), out)


def test_sft_leaves_a_plain_hf_folder_and_its_figures_and_skips_when_done(sft_run, tiny_tied, data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, record = sft_run
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert tok.chat_template == tiny.CHAT_TEMPLATE  # the model's own, not the marked training copy
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert record["steps"] == 3 and record["train_loss_first"] > 0 and record["tokens_per_s"] > 0
    assert record["english_bpb_before"] > 0 and record["english_bpb_after"] > 0 and "english_regressed" in record
    assert record["mix"]["ratio"] == 0.5 and record["chat_template"]["source"] == "model"
    assert (out / "metrics.jsonl").exists() and (out / "DONE").exists()
    again = tiny.run_stage("sft", _sft(tiny_tied, data, max_steps=3, eval_english=[data["eval_en"]]), out)
    assert again["skipped"]


def test_new_embeddings_train_through_the_row_freeze_callback(tmp_path, tiny_untied_padded, data):
    model = _extended(tiny_untied_padded, tmp_path / "m")
    record = tiny.run_stage("sft", _sft(model, data, train="new-embeddings,layers.1", weight_decay=0.1), tmp_path / "o")
    before, after = _weights(model), _weights(tmp_path / "o" / "final")
    n_tok = before["lm_head.weight"].shape[0] - 13  # the padding rows after the tokenizer's stay too
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(before[key][:BASE], after[key][:BASE]) and torch.equal(before[key][n_tok:], after[key][n_tok:])
        assert not torch.equal(before[key][BASE:n_tok], after[key][BASE:n_tok])
    assert record["frozen_rows_unchanged"] is True
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_lora_trains_adapters_and_the_new_rows_and_saves_the_merged_model(tmp_path, tiny_tied, tiny_untied_padded,
                                                                          data, tied):  # fmt: skip
    model = _extended(tiny_tied if tied else tiny_untied_padded, tmp_path / "m")
    record = tiny.run_stage("sft", _sft(model, data, lora=True, lora_r=4, lr=1e-2), tmp_path / "o")
    before, after = _weights(model), _weights(tmp_path / "o" / "final")
    assert set(after) == set(before)  # merged: plain weights, no adapter keys (a tied head stays tied)
    n_tok = before["model.embed_tokens.weight"].shape[0] - (0 if tied else 13)
    assert record["new_token_rows"] == n_tok - BASE and record["frozen_rows_unchanged"] is True
    for key in ("model.embed_tokens.weight", *([] if tied else ["lm_head.weight"])):
        assert torch.equal(before[key][:BASE], after[key][:BASE])
        assert not torch.equal(before[key][BASE:n_tok], after[key][BASE:n_tok])
    assert not torch.equal(before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])
    assert json.loads((tmp_path / "o" / "final" / "extension.json").read_text())["base_vocab_size"] == BASE


def test_an_interrupted_sft_resumes_from_its_checkpoint(tmp_path, tiny_tied, data, monkeypatch):
    from transformers import TrainerCallback

    from langadapt.train import align

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    attach = align.attach_row_freeze
    monkeypatch.setattr(align, "attach_row_freeze", lambda trainer, s: (trainer.add_callback(Crash()), attach(trainer, s)))
    cfg = _sft(tiny_tied, data, max_steps=4, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        tiny.run_stage("sft", cfg, tmp_path / "o")
    assert (work_folder(tmp_path / "o") / "trainer" / "checkpoint-2").is_dir()
    monkeypatch.setattr(align, "attach_row_freeze", attach)
    record = tiny.run_stage("sft", cfg, tmp_path / "o")
    assert record["resumed_from"] == "checkpoint-2" and record["steps"] == 4


# ---------------------------------------------------------------------------------------------- DPO


def test_dpo_raises_the_margin_on_its_training_pairs(tmp_path, sft_run, data):
    out, _ = sft_run
    record = tiny.run_stage("dpo", _dpo(out / "final", data, max_steps=10, eval_english=[data["eval_en"]]),
                            tmp_path / "dpo")  # fmt: skip
    assert record["reward_margin_before"] == 0 and record["reward_margin_after"] > 0.2
    assert record["reward_accuracy_after"] > record["reward_accuracy_before"]
    assert record["reference"] == "policy before training (precomputed)" and record["reference_model"] == str(out / "final")
    assert record["english_bpb_before"] == pytest.approx(_sft_bpb_after(out), rel=1e-6)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "dpo" / "final").get_input_embeddings().weight.shape[0] == 600


def _sft_bpb_after(out: Path) -> float:
    return json.loads((out / "stage.json").read_text())["english_bpb_after"]


def test_dpo_reference_is_the_model_on_disk_with_the_policys_vocabulary(tmp_path, tiny_untied_padded, data):
    from langadapt.train.dpo import build_trainer, reference

    model = _extended(tiny_untied_padded, tmp_path / "m")  # 13 padding rows: a reference from a config would differ
    trainer, s, _ = build_trainer(_dpo(model, data, precompute_ref_log_probs=False), tmp_path / "w")
    ref = trainer.ref_model
    assert ref is not None and ref.config._name_or_path == str(model)
    assert ref.get_input_embeddings().weight.shape == s.model.get_input_embeddings().weight.shape
    assert ref.get_output_embeddings().weight.shape[0] == len(s.tokenizer) + 13
    assert reference(trainer, s)["reference"] == "model"


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["no-messages", "bad-role", "no-chosen", "ratio"])
def test_bad_input_is_one_line_exit_2_and_nothing_left(case, tmp_path, tiny_tied, data, capsys):
    from langadapt.cli import main

    bad = tmp_path / "bad.jsonl"
    out = tmp_path / "out"
    if case == "no-messages":
        _jsonl(bad, [_chat("a", "b"), {"text": "no chat here"}])
        args, want = ["train", "sft", "--data", str(bad), "--ratio", "0"], "bad.jsonl: line 2: no 'messages'"
    elif case == "bad-role":
        _jsonl(bad, [{"messages": [{"role": "human", "content": "a"}, {"role": "assistant", "content": "b"}]}])
        args, want = ["train", "sft", "--data", data["en"], "--translated", str(bad)], "line 1: messages[0] has role 'human'"
    elif case == "no-chosen":
        _jsonl(bad, [{"prompt": "a", "rejected": "b"}])
        args, want = ["train", "dpo", "--data", str(bad), "--ratio", "0"], "bad.jsonl: line 1: no 'chosen'"
    else:
        args, want = ["train", "sft", "--data", data["en"], "--ratio", "1.5"], "ratio must be between 0 and 1"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--model", str(tiny_tied), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and want in err, err
    assert not out.exists() and not work_folder(out).exists()


def test_sambalingo_recipe_and_the_runner_wire_sft_then_dpo():
    from langadapt.pipeline import load_recipe_file, plan

    recipe = load_recipe_file(Path(__file__).resolve().parents[1] / "src" / "langadapt" / "recipes" / "sambalingo.yaml")
    sft, dpo = recipe.sft, recipe.dpo
    assert (sft.epochs, sft.lr, sft.scheduler, sft.warmup, sft.max_length) == (1, 2e-5, "linear", 0.1, 2048)
    assert sft.micro_batch * sft.grad_accum * 8 == 512 and dpo.micro_batch * dpo.grad_accum * 8 == 32
    assert (dpo.epochs, dpo.lr, dpo.beta, dpo.ratio) == (3, 5e-7, 0.1, 0.1)
    stages = {s.name: s for s in plan(recipe)}
    assert stages["sft"].config.model == str(stages["pretrain"].out / "final")
    assert stages["dpo"].config.model == str(stages["sft"].out / "final")
    # alignment is planned after the adapted model's evaluations (eval chat compares before and after)
    order = list(stages)
    assert order.index("eval") < order.index("sft") < order.index("dpo")
    assert stages["eval"].config.models[-1] == str(stages["pretrain"].out / "final")
