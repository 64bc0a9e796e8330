"""``export gguf``: tiny extended models of a byte-level family (Llama-3's real tokenizer) and a SentencePiece
family (Mistral v3's real tokenizer + tokenizer.model) converted by llama.cpp's own converter and checked in
a real llama.cpp runtime (the xllamacpp wheel's libllama): tokenization id for id, bits per byte, greedy
continuations. Plus the pre-tokenizer override, the stale tokenizer.model refusal and the bad-input cases.

The converter and runtime come from the registry (tests/llamacpp_fixture.py); a failed fetch skips with
the reason. The extended tiny models are cached between sessions in the test cache (they are inputs);
the exports are made fresh each session (they are what is tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tiny

from langadapt.config import ExportConfig, ExtendConfig, InitConfig
from langadapt.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

FORMAT = 3  # bump when the cached fixture models change
HIDDEN = 64
N_NEW = 60
# The converter hashes the ids of its fixed test string to name the pre-tokenizer; this phrase is in that
# string, so an extension that learns it changes those ids (as a Cyrillic extension does for real).
CHKTXT_PHRASE = "нещо на Български "
# model family -> (real tokenizer, tied head): GPT-2's byte-level BPE (50k, as SmolLM2's 49k; Llama-3's 128k
# costs minutes here) and Mistral v3's SentencePiece model
FAMILIES = {"llama": ("gpt2", True), "mistral": ("mistral-v3", False)}


@pytest.fixture(scope="module")
def llama() -> dict[str, str]:
    from llamacpp_fixture import llama_cpp_dir, llama_lib

    return {"llama_cpp": str(llama_cpp_dir()), "llama_lib": str(llama_lib())}


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, hu_texts, en_texts) -> dict[str, str]:
    d = tmp_path_factory.mktemp("export-heldout")
    return {"target": str(tiny.write_jsonl(d / "hu.jsonl", hu_texts[200:212])),
            "english": str(tiny.write_jsonl(d / "en.jsonl", en_texts[200:212]))}  # fmt: skip


def extended_model(family: str, hu_texts: list[str], en_texts: list[str]) -> Path:
    """base -> tokenizer extend -> embeddings init of a tiny ``family`` model, built once into the test
    cache (in place, a marker written last: the records inside name these very folders)."""
    from real_tokenizers import _locked, cache_dir, real_tokenizer

    tok_name, tied = FAMILIES[family]
    tok = real_tokenizer(tok_name)
    root = cache_dir() / "export-models" / f"{family}-f{FORMAT}"
    marker = root / "READY"
    if marker.exists():
        return root / "model"
    with _locked(f"export-model-{family}"):
        if marker.exists():
            return root / "model"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        base = tiny.family_model(root / "base", tok, family, hidden=HIDDEN, tied=tied)
        if (tok / "tokenizer.model").is_file():  # as a real Mistral folder ships it (save_pretrained drops it)
            shutil.copy2(tok / "tokenizer.model", base / "tokenizer.model")
        corpus = tiny.write_jsonl(root / "hu.jsonl", hu_texts[:150] + [CHKTXT_PHRASE * 8] * 40)
        english = tiny.write_jsonl(root / "en.jsonl", en_texts[:60])
        tiny.run_stage("extend", ExtendConfig(base=str(base), corpus=[str(corpus)], num_new_tokens=N_NEW,
                                              english_corpus=[str(english)]), root / "tokenizer")  # fmt: skip
        tiny.run_stage("init", InitConfig(model=str(base), tokenizer=str(root / "tokenizer"), kl_corpus=[str(english)],
                                          kl_max_docs=2, bf16=False, device="cpu"), root / "model")  # fmt: skip
        marker.write_text("ok\n")
    return root / "model"


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory, llama, heldout, hu_texts, en_texts) -> dict:
    """The family's extended model exported at f32 and verified; the stage record and its folder."""
    model = extended_model(request.param, hu_texts, en_texts)
    out = tmp_path_factory.mktemp(f"export-{request.param}") / "export"
    cfg = ExportConfig(model=str(model), outtype="f32", verify_target=[heldout["target"]],
                       verify_english=[heldout["english"]], bpb_docs=3, max_doc_chars=800, threads=1,
                       **llama)  # fmt: skip
    record = tiny.run_stage("export", cfg, out)
    return {"family": request.param, "model": model, "out": out, "record": record,
            "verify": json.loads((out / "verify.json").read_text(encoding="utf-8"))}  # fmt: skip


def test_exported_model_agrees_with_transformers_in_llama_cpp(exported):
    rec, v = exported["record"], exported["verify"]
    assert (exported["out"] / "model-f32.gguf").stat().st_size == rec["size_bytes"] > 0
    assert rec["verified"] is True, v["failures"]
    # 1. tokenization: held-out Hungarian and English, and the probes (specials, chat template, new tokens)
    tok = v["tokenization"]
    assert tok["mismatches"] == 0
    assert tok["target"]["documents"] == tok["english"]["documents"] == 12
    assert tok["probes"]["documents"] >= 2 and tok["probes"]["mismatches"] == 0
    # 2. bits per byte within 0.5% (f32: in practice within float rounding)
    for corpus in ("target", "english"):
        assert v["bpb"][corpus]["relative_diff"] < 0.005, v["bpb"]
    # 3. greedy continuations identical at f32
    assert v["greedy"]["prompts"] == 4 and v["greedy"]["agree"] == 4, v["greedy"]["items"]


def test_the_documented_session_api_round_trips_text(exported, llama, hu_texts):
    """docs/export.md's code API: load_runtime, then LlamaCppModel's tokenize and detokenize agree with the
    model's own tokenizer (new tokens included) and give the text back."""
    from langadapt.llamacpp.session import LlamaCppModel, load_runtime
    from langadapt.models import load_tokenizer

    runtime = load_runtime(llama["llama_lib"], llama_cpp=llama["llama_cpp"])
    tokenizer = load_tokenizer(exported["model"])
    text = hu_texts[205][:300]
    with LlamaCppModel(exported["out"] / "model-f32.gguf", runtime, n_ctx=512, n_threads=1) as llm:
        ids = llm.tokenize(text, add_special=False)
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert any(i >= exported["record"]["conversion"]["base"]["first_new_id"] for i in ids)
        assert llm.detokenize(ids) == tokenizer.decode(ids) == text


def test_new_tokens_reach_the_gguf(exported):
    """Every new id is a normal token of the GGUF (a stale tokenizer.model would make them [PAD])."""
    conv = exported["record"]["conversion"]
    ext = json.loads((exported["model"].parent / "tokenizer" / "extension.json").read_text(encoding="utf-8"))
    assert conv["base"]["first_new_id"] == ext["first_new_id"]
    # the new ids are normal tokens; only init's padding rows past the tokenizer are unused entries
    assert conv["new_token_types"].pop("NORMAL") == ext["added"]
    rows = json.loads((exported["model"] / "config.json").read_text())["vocab_size"]
    assert conv["new_token_types"] == ({"UNUSED": rows - ext["new_vocab_size"]} if rows > ext["new_vocab_size"] else {})
    assert conv["n_tokens"] == rows
    if exported["family"] == "mistral":
        assert conv["tokenizer_model"] == "llama"  # the converter's SentencePiece path (tokenizer.model)


def test_extended_byte_level_tokenizer_gets_the_base_pre_tokenizer(exported):
    if exported["family"] != "llama":
        pytest.skip("byte-level only: SentencePiece vocabularies have no hashed pre-tokenizer")
    rec = exported["record"]
    conv = rec["conversion"]
    assert conv["tokenizer_model"] == "gpt2"
    assert conv["model_pre_tokenizer"] is None  # the converter alone: "BPE pre-tokenizer was not recognized"
    assert conv["base_pre_tokenizer"] == "gpt-2" == rec["pre_tokenizer"]
    assert "base tokenizer" in rec["pre_tokenizer_source"]


def test_rebuilt_base_tokenizes_like_the_base(exported, tmp_path):
    """With the base folder gone, the base rebuilt from the extended tokenizer.json encodes as the base did."""
    from transformers import AutoTokenizer

    from langadapt.llamacpp.convert import rebuild_base

    model = exported["model"]
    first_new = exported["record"]["conversion"]["base"]["first_new_id"]
    rebuilt = AutoTokenizer.from_pretrained(rebuild_base(model, first_new, tmp_path))
    base = AutoTokenizer.from_pretrained(model.parent / "base")
    ext = AutoTokenizer.from_pretrained(model)
    text = CHKTXT_PHRASE * 3 + "Szia világ! " + tiny.demo_texts("hu", "valid", 1)[0][:300]
    assert len(rebuilt) == len(base) == first_new
    assert rebuilt(text)["input_ids"] == base(text)["input_ids"] != ext(text)["input_ids"]


def test_export_without_runtime_says_not_verified(tmp_path, exported, llama, monkeypatch, capsys):
    """No runtime: the export is committed and says so. (The conversion is replayed from the fixture's:
    each converter run costs ~15 s of imports on a shared 2-core machine, and it is tested above.)"""
    from langadapt.export import gguf

    done = exported["record"]["conversion"]

    def replay(source, model_dir, out_file, outtype, **kwargs):
        shutil.copy2(exported["out"] / "model-f32.gguf", out_file)
        return dict(done)

    monkeypatch.setattr(gguf, "convert", replay)
    monkeypatch.setattr(gguf, "find_runtime", lambda *a, **k: (None, "no llama.cpp runtime library found (test)"))
    cfg = ExportConfig(model=str(exported["model"]), outtype="f32", llama_cpp=llama["llama_cpp"])
    record = tiny.run_stage("export", cfg, tmp_path / "export")
    assert record["verified"] is False
    assert record["verification"]["status"] == "not verified: no llama.cpp runtime library found (test)"
    assert (tmp_path / "export" / "model-f32.gguf").is_file() and not (tmp_path / "export" / "verify.json").exists()
    gguf.print_export(record, tmp_path / "export")  # no exit: an unverified export is not a failed one
    assert "not verified" in capsys.readouterr().out
    with pytest.raises(UserError, match="verify: require"):
        tiny.run_stage("export", ExportConfig(model=str(exported["model"]), verify="require",
                                              llama_cpp=llama["llama_cpp"]), tmp_path / "export-required")  # fmt: skip
    assert not (tmp_path / "export-required").exists()


def test_failed_check_is_committed_and_exits_1(tmp_path, exported, capsys):
    """A failed check keeps the GGUF and its figures (DONE) and the command exits 1, every time it is shown."""
    from langadapt.export.gguf import print_export

    record = json.loads(json.dumps(exported["record"]))
    record["verified"] = False
    record["verification"]["status"] = "FAILED: greedy continuations differ from transformers' on 1 of 4 prompts"
    with pytest.raises(SystemExit) as exc:
        print_export(record, exported["out"])
    assert exc.value.code == 1
    assert "FAILED" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- bad input


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from langadapt.cli import main

    capsys.readouterr()  # what the fixtures printed (transformers' progress bars)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err.strip()


def _no_gguf(root: Path) -> None:
    assert not list(root.rglob("*.gguf")), "a partial GGUF was left behind"


def test_unknown_architecture_is_refused(tmp_path, llama, capsys):
    model = tiny.tiny_model(tmp_path / "m", tiny.bytelevel_tokenizer(tmp_path / "t", tiny.demo_texts("en", n=50)))
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["FrobnicatorForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    code, err = _cli(["export", "gguf", "--model", str(model), "--out", str(tmp_path / "out"),
                      "--llama-cpp", llama["llama_cpp"], "--verify", "off"], capsys)  # fmt: skip
    assert code == 2
    assert err.count("\n") == 0 and str(model / "config.json") in err and "FrobnicatorForCausalLM" in err
    assert not (tmp_path / "out").exists()
    _no_gguf(tmp_path)


def test_folder_without_tokenizer_is_refused(tmp_path, capsys):
    model = tiny.tiny_model(tmp_path / "m", tiny.bytelevel_tokenizer(tmp_path / "t", tiny.demo_texts("en", n=50)))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink(missing_ok=True)
    code, err = _cli(["export", "gguf", "--model", str(model), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 0
    assert str(model) in err and "no tokenizer" in err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, err = _cli(["export", "gguf", "--model", "x", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 0 and "already exists" in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_missing_llama_cpp_source_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LANGADAPT_LLAMA_CPP", raising=False)
    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path / "empty-cache"))
    model = tiny.tiny_model(tmp_path / "m", tiny.bytelevel_tokenizer(tmp_path / "t", tiny.demo_texts("en", n=50)))
    code, err = _cli(["export", "gguf", "--model", str(model), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 0 and "no llama.cpp converter found" in err
    code, err = _cli(["export", "gguf", "--model", str(model), "--out", str(tmp_path / "out"),
                      "--llama-cpp", str(tmp_path / "nowhere")], capsys)  # fmt: skip
    assert code == 2 and str(tmp_path / "nowhere") in err
    assert not (tmp_path / "out").exists()
    _no_gguf(tmp_path)


# ------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_smollm2_demo_extension_exports_verified_at_f16(tmp_path, llama):
    """The demo's adaptation (SmolLM2-135M + 8,000 Hungarian tokens, English as the reference) exported at
    f16: identical tokenization of the held-out Hungarian and English splits, bpb within 0.5%."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "corpora"
    if not (shared / "hu" / "valid.jsonl.gz").is_file():
        pytest.skip(f"the shared held-out corpora are not here ({shared})")
    tok, model = tmp_path / "tokenizer", tmp_path / "model"
    tiny.run_stage("extend", ExtendConfig(base="smollm2-135m", corpus=[str(tiny.DEMO_DATA / "hu-train.jsonl.gz")],
                                          num_new_tokens=8000,
                                          english_corpus=[str(tiny.DEMO_DATA / "en-train.jsonl.gz")]), tok)  # fmt: skip
    tiny.run_stage("init", InitConfig(model="smollm2-135m", tokenizer=str(tok), device="cpu"), model)
    cfg = ExportConfig(model=str(model), outtype="f16", verify_target=[str(shared / "hu" / "valid.jsonl.gz")],
                       verify_english=[str(shared / "en" / "valid.jsonl.gz")], tokenize_docs=None, **llama)  # fmt: skip
    record = tiny.run_stage("export", cfg, tmp_path / "export")
    v = json.loads((tmp_path / "export" / "verify.json").read_text(encoding="utf-8"))
    assert record["pre_tokenizer"] == "smollm"
    assert v["bpb"]["target"]["relative_diff"] < 0.005 and v["bpb"]["english"]["relative_diff"] < 0.005
    assert v["greedy"]["prompts"] == 4
    assert v["tokenization"]["target"]["documents"] > 100 and v["tokenization"]["english"]["documents"] > 100
    assert v["tokenization"]["mismatches"] == 0, v["tokenization"]  # every document of both splits
    assert record["verified"] is True, v["failures"]
