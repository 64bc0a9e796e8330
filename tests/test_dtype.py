"""The embedding stages keep the model's dtype (issue 19): a bf16 model comes out bf16, unless told otherwise.

Tiny random models (hidden 32) saved in bf16; every check reads the safetensors headers and config.json
of what the stage wrote, so a stage that silently upcasts fails here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ext_tok
import pytest
import torch
from safetensors.torch import load_file

from langadapt.config import ConfigError, DistillConfig, EvalConfig, InitConfig
from langadapt.embeddings.init import init_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")

N_NEW = 60


def _header_dtypes(folder: Path) -> set[str]:
    """The dtypes of the tensors in a folder's safetensors files, from their headers."""
    dtypes = set()
    for file in folder.glob("*.safetensors"):
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        dtypes |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return dtypes


def _config_dtype(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return config.get("dtype") or config.get("torch_dtype")


def _as_bf16(src: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    assert _header_dtypes(out) == {"BF16"} and _config_dtype(out) == "bfloat16"
    return out


@pytest.fixture(scope="module")
def ext_tokenizer(tmp_path_factory, bytelevel_tok, hu_texts) -> Path:
    return ext_tok.extend_tokenizer(bytelevel_tok, hu_texts, tmp_path_factory.mktemp("ext") / "tok", N_NEW)


@pytest.fixture(scope="module", params=["tiny_tied", "tiny_untied_padded"])
def bf16_model(request, tmp_path_factory) -> Path:
    return _as_bf16(request.getfixturevalue(request.param), tmp_path_factory.mktemp("bf16") / "model")


@pytest.fixture(scope="module")
def bf16_init(tmp_path_factory, bf16_model, ext_tokenizer) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("init") / "model"
    record = init_embeddings(InitConfig(model=str(bf16_model), tokenizer=str(ext_tokenizer), kl_max_docs=2,
                                        output_remedy="none"), out)  # fmt: skip
    return out, record


def test_init_keeps_bf16(bf16_model, bf16_init):
    out, record = bf16_init
    assert record["dtype"] == "bfloat16"
    assert _header_dtypes(out) == {"BF16"} and _config_dtype(out) == "bfloat16"
    before, after = load_file(bf16_model / "model.safetensors"), load_file(out / "model.safetensors")
    n_base, n_ext = record["n_base"], record["n_ext"]
    for key, value in before.items():
        if after[key].shape != value.shape:  # an embedding matrix: base rows bit-identical, new rows set
            assert torch.equal(after[key][:n_base], value[:n_base]), key
            assert after[key][n_base:n_ext].abs().sum() > 0, key
        else:
            assert torch.equal(after[key], value), key


def test_init_new_rows_are_float32_means_rounded_once(bf16_model, bf16_init, ext_tokenizer):
    """mean-subword in float32 from the bf16 rows, then one rounding: not a mean taken in bf16."""
    from langadapt.embeddings.rows import subword_ids
    from langadapt.models import load_fast_tokenizer, load_tokenizer

    out, record = bf16_init
    before, after = load_file(bf16_model / "model.safetensors"), load_file(out / "model.safetensors")
    key = "model.embed_tokens.weight"
    base_fast, ext = load_fast_tokenizer(bf16_model), load_tokenizer(ext_tokenizer)
    tokens = ext.convert_ids_to_tokens(list(range(record["n_base"], record["n_ext"])))
    for i, token in enumerate(tokens):
        ids = subword_ids(base_fast, token)
        want = before[key][ids].float().mean(0).to(torch.bfloat16)
        assert torch.equal(after[key][record["n_base"] + i], want), token


def test_init_dtype_float32_upcasts_when_asked(bf16_model, ext_tokenizer, tmp_path):
    out = tmp_path / "m"
    record = init_embeddings(InitConfig(model=str(bf16_model), tokenizer=str(ext_tokenizer), kl_max_docs=2,
                                        dtype="float32"), out)  # fmt: skip
    assert record["dtype"] == "float32"
    assert _header_dtypes(out) == {"F32"} and _config_dtype(out) == "float32"


def test_init_keeps_float32(tiny_tied, ext_tokenizer, tmp_path):
    out = tmp_path / "m"
    assert init_embeddings(InitConfig(model=str(tiny_tied), tokenizer=str(ext_tokenizer), kl_max_docs=2),
                           out)["dtype"] == "float32"  # fmt: skip
    assert _header_dtypes(out) == {"F32"}


def _distill_cfg(init_dir: Path, base: Path, corpus: Path, **kw) -> DistillConfig:
    settings = {"steps": 2, "calibrate_steps": 2, "lr": 1e-2, "batch_size": 2, "seq_len": 32, "bf16": False,
                "report_to": "none", **kw}  # fmt: skip
    return DistillConfig(model=str(init_dir), teacher=str(base), corpus=[str(corpus)], **settings)


def test_distill_keeps_bf16(bf16_model, bf16_init, hu_corpus, tmp_path):
    from tiny import run_stage

    init_dir, record = bf16_init
    out = tmp_path / "d"
    result = run_stage("distill", _distill_cfg(init_dir, bf16_model, hu_corpus), out)
    assert result["dtype"] == "bfloat16" and result["frozen_rows_unchanged"] is True
    assert _header_dtypes(out) == {"BF16"} and _config_dtype(out) == "bfloat16"
    before, after = load_file(init_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()  # the trained rows' module is not saved
    n_base, n_ext = record["n_base"], record["n_ext"]
    trained = 0
    for key, value in before.items():
        if value.shape[0] == record["rows_after"]:
            assert torch.equal(after[key][:n_base], value[:n_base]) and torch.equal(after[key][n_ext:], value[n_ext:])
            trained += not torch.equal(after[key][n_base:n_ext], value[n_base:n_ext])
        else:
            assert torch.equal(after[key], value), key
    assert trained == (1 if record["tied"] else 2)  # lr 1e-2 moves bf16 rows; both matrices train in stage 2


def test_distill_dtype_float32_upcasts_when_asked(bf16_model, bf16_init, hu_corpus, tmp_path):
    from tiny import run_stage

    init_dir, _ = bf16_init
    out = tmp_path / "d"
    result = run_stage("distill", _distill_cfg(init_dir, bf16_model, hu_corpus, steps=1, calibrate_steps=0,
                                               dtype="float32"), out)  # fmt: skip
    assert result["dtype"] == "float32" and _header_dtypes(out) == {"F32"} and _config_dtype(out) == "float32"


def test_new_rows_module_computes_what_the_plain_model_does(tiny_untied_padded):
    """With NewRows attached (and untrained), logits equal the plain model's, new-token ids included."""
    from langadapt.embeddings.distill import NewRows
    from langadapt.models import load_model

    model = load_model(tiny_untied_padded)
    rows = model.get_input_embeddings().weight.shape[0]
    ids = torch.tensor([[1, 5, rows - 20, 7, rows - 19, rows - 30]])
    want = model(input_ids=ids).logits
    new = NewRows(model, rows - 40, rows - 10)
    got = model(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-6)
    with torch.no_grad():
        new.input[10] += 1.0  # row rows - 30 moves: the model reads the module's rows, not the matrix's
        new.output[25] += 1.0  # head row rows - 15
    moved = model(input_ids=ids).logits
    assert not torch.allclose(moved[0, 5:], want[0, 5:]) and torch.allclose(moved[0, :5, : rows - 15],
                                                                             want[0, :5, : rows - 15])  # fmt: skip
    new.remove(model)
    assert NewRows.ATTR not in dict(model.named_children())
    assert torch.allclose(model(input_ids=ids).logits, moved, atol=1e-6)  # written back into the matrices


def test_stored_dtype_reads_old_configs_and_headers(tiny_tied, tmp_path):
    import shutil

    from langadapt.models import resolve_dtype, stored_dtype

    folder = shutil.copytree(tiny_tied, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None)
    config["torch_dtype"] = "bfloat16"  # as transformers 4 wrote it
    (folder / "config.json").write_text(json.dumps(config))
    assert stored_dtype(folder) == torch.bfloat16
    config.pop("torch_dtype")
    (folder / "config.json").write_text(json.dumps(config))
    assert stored_dtype(folder) == torch.float32  # from the safetensors header
    assert resolve_dtype("float16", folder) == torch.float16


def test_eval_bpb_scores_a_bf16_model_as_stored_when_asked(bf16_model, hu_corpus, tmp_path):
    """eval bpb loads in float32 by default (figures independent of storage) and, with dtype auto, in the
    stored bf16 (no converted copy): the dtype is recorded and the figures agree to bf16's precision."""
    from langadapt.cli import main

    figures = {}
    for dtype in ("float32", "auto"):
        out = tmp_path / dtype
        main(["eval", "bpb", "--models", str(bf16_model), "--target", str(hu_corpus), "--max-docs", "4",
              "--max-doc-chars", "400", "--dtype", dtype, "--no-bf16", "--device", "cpu", "--out", str(out)])  # fmt: skip
        (model,) = json.loads((out / "metrics.json").read_text())["models"]
        figures[dtype] = model
    assert figures["float32"]["dtype"] == "float32" and figures["auto"]["dtype"] == "bfloat16"
    assert figures["auto"]["target"]["tokens"] == figures["float32"]["target"]["tokens"]
    assert figures["auto"]["target"]["bpb"] == pytest.approx(figures["float32"]["target"]["bpb"], rel=0.02)


@pytest.mark.parametrize("config", [InitConfig, DistillConfig, EvalConfig])
def test_bad_dtype_is_a_config_error(config):
    with pytest.raises(ConfigError, match="dtype must be auto, float32, bfloat16 or float16"):
        config(dtype="int8")
