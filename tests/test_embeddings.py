"""embeddings init / distill on tiny random models: base rows never move, new rows get what they should."""

from __future__ import annotations

import json
from pathlib import Path

import ext_tok
import pytest
import torch
from safetensors.torch import load_file

from langadapt.config import DistillConfig, InitConfig
from langadapt.embeddings.init import init_embeddings

N_NEW = 150


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def ext_tokenizer(tmp_path_factory, bytelevel_tok, hu_texts) -> Path:
    return ext_tok.extend_tokenizer(bytelevel_tok, hu_texts, tmp_path_factory.mktemp("ext") / "tok", N_NEW)


@pytest.fixture(scope="session", params=["tiny_tied", "tiny_untied_padded"])
def base_and_init(request, tmp_path_factory, ext_tokenizer):
    base = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp("init") / "model"
    record = init_embeddings(InitConfig(model=str(base), tokenizer=str(ext_tokenizer), kl_max_docs=4), out)
    return base, out, record


def _matrices(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _embedding_keys(tensors: dict[str, torch.Tensor], rows: int) -> list[str]:
    return [k for k, v in tensors.items() if v.ndim == 2 and v.shape[0] == rows]


def test_init_keeps_base_rows_and_pads(base_and_init, ext_tokenizer):
    base, out, record = base_and_init
    before, after = _matrices(base), _matrices(out)
    n_base = record["n_base"]
    assert record["rows_after"] % 64 == 0 and record["rows_after"] >= record["n_ext"] == n_base + N_NEW
    keys = _embedding_keys(after, record["rows_after"])
    assert keys and len(keys) == (1 if record["tied"] else 2)
    for k in keys:
        assert torch.equal(after[k][:n_base], before[k][:n_base])
        assert torch.isfinite(after[k]).all()
    for k, v in before.items():  # every other weight is untouched
        if k not in keys:
            assert torch.equal(after[k], v)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == record["rows_after"]
    assert record["english_padding_mass"] < 0.05 and record["english_kl"] >= 0


def test_init_output_loads_and_generates(base_and_init):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out, record = base_and_init
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == record["n_ext"]
    generated = model.generate(**tok("Az ablak", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > 1


def test_padded_model_reuses_its_padding_rows(tiny_untied_padded, tmp_path, ext_tokenizer):
    record = init_embeddings(InitConfig(model=str(tiny_untied_padded), tokenizer=str(ext_tokenizer),
                                        pad_to_multiple_of=None, kl_max_docs=2), tmp_path / "m")  # fmt: skip
    assert record["reused_padding_rows"] == 13
    assert record["rows_after"] == record["n_ext"] and record["new_padding_rows"] == 0


def test_mean_subword_row_is_the_mean_of_its_pieces(tiny_untied_padded, tmp_path, ext_tokenizer):
    from langadapt.models import load_tokenizer

    out = tmp_path / "m"
    init_embeddings(InitConfig(model=str(tiny_untied_padded), tokenizer=str(ext_tokenizer),
                               output_remedy="none", kl_max_docs=2), out)  # fmt: skip
    base_tok, new_tok = load_tokenizer(tiny_untied_padded), load_tokenizer(out)
    before, after = _matrices(tiny_untied_padded), _matrices(out)
    checked = 0
    for new_id in range(len(base_tok), len(new_tok)):
        text = new_tok.decode([new_id])
        if not text.strip().isalpha():
            continue  # a piece of a word split by the pre-tokenizer differently in context; see below
        pieces = base_tok(text, add_special_tokens=False)["input_ids"]
        assert len(pieces) > 1
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.allclose(after[key][new_id], before[key][pieces].mean(0), atol=1e-6)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("method", ["mean", "random"])
def test_ablation_methods_set_every_new_row(tiny_tied, tmp_path, ext_tokenizer, method):
    record = init_embeddings(InitConfig(model=str(tiny_tied), tokenizer=str(ext_tokenizer), method=method,
                                        kl_max_docs=2), tmp_path / "m")  # fmt: skip
    w = _matrices(tmp_path / "m")["model.embed_tokens.weight"]
    new = w[record["n_base"] : record["n_ext"]]
    assert torch.isfinite(new).all() and new.abs().sum() > 0
    if method == "mean":
        assert torch.allclose(new, new[0].expand_as(new))


# -------------------------------------------------------------------------------------------- distill


def _distill_cfg(init_dir: Path, base: Path, corpus: Path, **kw) -> DistillConfig:
    settings = {"steps": 12, "calibrate_steps": 6, "lr": 1e-2, "batch_size": 4, "seq_len": 48, "bf16": False,
                "report_to": "none"}  # fmt: skip
    settings.update(kw)
    return DistillConfig(model=str(init_dir), teacher=str(base), corpus=[str(corpus)], **settings)


def _distill(cfg: DistillConfig, out: Path) -> dict:
    """Through the stage runner, as the CLI and the recipes run it."""
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    return run_stage(BY_NAME["distill"], cfg, out)


def test_distill_changes_only_new_rows_and_loss_goes_down(base_and_init, hu_corpus, tmp_path):
    from langadapt.runs import work_folder

    base, init_dir, record = base_and_init
    out = tmp_path / "distilled"
    result = _distill(_distill_cfg(init_dir, base, hu_corpus), out)
    before, after = _matrices(init_dir), _matrices(out)
    n_base, n_ext = record["n_base"], record["n_ext"]
    keys = _embedding_keys(after, record["rows_after"])
    assert len(keys) == (1 if record["tied"] else 2)
    for k, v in before.items():
        if k in keys:
            assert torch.equal(after[k][:n_base], v[:n_base]), k  # base rows: bit-identical
            assert torch.equal(after[k][n_ext:], v[n_ext:]), k  # padding rows too
            assert not torch.equal(after[k][n_base:n_ext], v[n_base:n_ext]), k  # new rows trained
        else:
            assert torch.equal(after[k], v), k
    loss = result["loss"]
    assert loss["distill"]["last"] < loss["distill"]["first"]
    assert loss["calibrate"]["last"] < loss["calibrate"]["first"]
    assert len(result["losses"]["distill"]) == 12 and len(result["losses"]["calibrate"]) == 6
    assert result["frozen_rows_unchanged"] is True and result["processes"] == 1 and result["bf16"] is False
    assert result["device"] == "cpu"
    assert (out / "DONE").exists() and (out / "stage.json").exists() and (out / "tokenizer.json").exists()
    assert not (out / "checkpoints").exists() and not work_folder(out).exists()
    if (init_dir / "extension.json").exists():
        assert (out / "extension.json").read_bytes() == (init_dir / "extension.json").read_bytes()


def test_distill_stage_one_trains_only_the_input_rows(tiny_untied_padded, ext_tokenizer, hu_corpus, tmp_path):
    """Untied head: stage 1 (hidden-state L2) trains the new input rows; the head waits for stage 2."""
    init_dir = tmp_path / "init"
    init_embeddings(InitConfig(model=str(tiny_untied_padded), tokenizer=str(ext_tokenizer), kl_max_docs=2), init_dir)
    out = tmp_path / "d"
    _distill(_distill_cfg(init_dir, tiny_untied_padded, hu_corpus, steps=4, calibrate_steps=0), out)
    before, after = _matrices(init_dir), _matrices(out)
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"])
    emb = "model.embed_tokens.weight"
    assert not torch.equal(after[emb], before[emb])


def test_distill_resumes_to_the_same_result(tiny_tied, ext_tokenizer, hu_corpus, tmp_path, monkeypatch):
    """Killed in stage 1 and in stage 2 (after a checkpoint): the resumed run equals an uninterrupted one."""
    from langadapt.embeddings import distill as mod
    from langadapt.runs import read_json, work_folder

    init_dir = tmp_path / "init"
    init_embeddings(InitConfig(model=str(tiny_tied), tokenizer=str(ext_tokenizer), kl_max_docs=2), init_dir)
    cfg = _distill_cfg(init_dir, tiny_tied, hu_corpus, steps=6, calibrate_steps=4, checkpoint_every=2)
    straight = _distill(cfg, tmp_path / "straight")
    real = mod.step_spans
    # step_spans is called once per step: 6 distill steps, then 4 calibrate steps. Call 5 is distill step 5
    # (after the step-4 checkpoint), call 10 calibrate step 4 (after its step-2 checkpoint).
    for crash_at, stage, saved in ((5, "distill", 4), (10, "calibrate", 2)):
        calls = {"n": 0}

        def crash(*args, crash_at=crash_at, calls=calls):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt
            return real(*args)

        out = tmp_path / f"resumed-{stage}"
        monkeypatch.setattr(mod, "step_spans", crash)
        with pytest.raises(KeyboardInterrupt):
            _distill(cfg, out)
        work = work_folder(out)
        assert not out.exists() and read_json(work / "checkpoints" / stage / f"step-{saved:08d}" / "meta.json")["step"] == saved
        if stage == "calibrate":  # its checkpoint holds stage 1's weights: stage 1's was dropped
            assert not (work / "checkpoints" / "distill").exists()
        monkeypatch.setattr(mod, "step_spans", real)
        resumed = _distill(cfg, out)
        a, b = _matrices(tmp_path / "straight"), _matrices(out)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
        assert resumed["losses"] == straight["losses"]
        assert not (out / "checkpoints").exists()


# ------------------------------------------------------------------------------------------ bad input


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from langadapt.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def test_cli_rejects_a_tokenizer_that_does_not_extend_the_model(tiny_tied, metaspace_tok, tmp_path, capsys):
    code, err = _cli(["embeddings", "init", "--model", str(tiny_tied), "--tokenizer", str(metaspace_tok),
                      "--out", str(tmp_path / "m")], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists() and not (tmp_path / ".e.partial").exists() and "does not extend" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_a_missing_model_folder(ext_tokenizer, tmp_path, capsys):
    code, err = _cli(["embeddings", "init", "--model", str(tmp_path / "nope"), "--tokenizer",
                      str(ext_tokenizer), "--out", str(tmp_path / "m")], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "m").exists()


def test_cli_rejects_zero_steps(base_and_init, hu_corpus, tmp_path, capsys):
    base, init_dir, _ = base_and_init
    code, err = _cli(["embeddings", "distill", "--model", str(init_dir), "--teacher", str(base), "--corpus",
                      str(hu_corpus), "--out", str(tmp_path / "d"), "--steps", "0"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "steps" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / ".d.partial").exists()


def test_cli_eval_bpb_rejects_a_missing_model(hu_corpus, tmp_path, capsys):
    code, err = _cli(["eval", "bpb", "--models", str(tmp_path / "nope"), "--target", str(hu_corpus),
                      "--out", str(tmp_path / "e")], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
