"""corpus prepare: dedup recall on planted duplicates, language/boilerplate/URL clean-up, scripts, resume.

Each pipeline run takes a few seconds (datatrove's stages in one process), so each test runs it once on
a small synthetic corpus and checks several things on its output.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import tiny

from langadapt.config import PrepareConfig
from langadapt.corpus.minhash import detection_probability, minhash_params
from langadapt.corpus.prepare import output_files, scratch_dir
from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.runs import run_stage, work_folder
from langadapt.stages import BY_NAME

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
ONLY_DEDUP = {
    "normalize": False,
    "min_script_ratio": 0.0,
    "language_id": False,
    "quality_filter": False,
    "boilerplate_filter": False,
}


def prepare(cfg: PrepareConfig, out: Path) -> dict:
    """The stage as the CLI and the recipe runner run it."""
    return run_stage(BY_NAME["prepare"], cfg, out)


def nothing_beside(out: Path) -> bool:
    """Neither the runner's work folder nor datatrove's scratch folder is left."""
    return not work_folder(out).exists() and not scratch_dir(out).exists()


def write_records(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


def read_output(out: Path) -> list[dict]:
    rows = []
    for shard in sorted((out / "shards").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh)
    return rows


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def mutate(rng: random.Random, text: str, share: float, vocab: list[str]) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(share * len(words)))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


# ------------------------------------------------------------------------------------------- dedup


def test_minhash_params_for_08() -> None:
    bands, rows = minhash_params(0.8)
    assert (bands, rows) == (13, 11)
    assert detection_probability(0.9, bands, rows) >= 0.99
    assert detection_probability(0.5, bands, rows) <= 0.01


def test_planted_duplicates_found_and_dissimilar_pairs_kept(tmp_path: Path) -> None:
    rng = random.Random(0)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(20000)]
    base = [" ".join(rng.choices(vocab, k=300)) for _ in range(400)]
    records = [{"id": f"base{i}", "text": t} for i, t in enumerate(base)]
    exact = [(f"base{i}", f"exact{i}") for i in range(100)]
    records += [{"id": dup, "text": base[int(src[4:])]} for src, dup in exact]
    near, far = [], []
    for i in range(100, 200):  # ~1% of words changed: Jaccard ~0.9 on 5-word shingles
        text = mutate(rng, base[i], 0.01, vocab)
        assert jaccard(base[i], text) >= 0.85
        records.append({"id": f"near{i}", "text": text})
        near.append((f"base{i}", f"near{i}"))
    for i in range(200, 400):  # 12% changed: Jaccard <= 0.5
        text = mutate(rng, base[i], 0.12, vocab)
        assert jaccard(base[i], text) <= 0.5
        records.append({"id": f"far{i}", "text": text})
        far.append((f"base{i}", f"far{i}"))
    rng.shuffle(records)
    corpus = write_records(tmp_path / "synthetic.jsonl", records)
    out = tmp_path / "out"

    record = prepare(PrepareConfig(input=[str(corpus)], lang="en", **ONLY_DEDUP), out)

    kept = {r["id"] for r in read_output(out)}
    found = lambda pairs: sum((a in kept) != (b in kept) for a, b in pairs) / len(pairs)
    assert found(exact) >= 0.95 and found(near) >= 0.95
    assert sum(a in kept and b in kept for a, b in far) / len(far) >= 0.99
    assert all(a in kept or b in kept for a, b in exact + near)  # one of each pair always stays
    steps = {s["step"]: s for s in record["steps"]}
    assert steps["exact_dedup"]["docs_in"] - steps["exact_dedup"]["docs_out"] == 100
    assert record["output"]["documents"] == len(kept)
    assert (out / "DONE").exists() and (out / "DATACARD.md").exists() and nothing_beside(out)
    assert sorted(p.name for p in out.iterdir()) == ["DATACARD.md", "DONE", "shards", "stage.json"]
    # later stages read the shards through the glob pipeline.py plans with
    assert len(check_corpus(output_files(out))) == record["output"]["shards"]
    assert sum(1 for _ in iter_documents(output_files(out))) == len(kept)


# ------------------------------------------------------------------ language, boilerplate, URLs


def test_language_boilerplate_and_placeholders(tmp_path: Path) -> None:
    rng = random.Random(1)
    hu = [t for t in tiny.demo_texts("hu", n=400) if len(t.split()) >= 30][:150]
    en = [t for t in tiny.demo_texts("en", n=400) if len(t.split()) >= 30][:60]
    boiler = "Minden jog fenntartva. A weboldal sütiket használ a jobb felhasználói élmény érdekében."
    with_boiler = set(rng.sample(range(len(hu)), k=int(0.3 * len(hu))))
    records = []
    for i, text in enumerate(hu):
        if i in with_boiler:
            text = f"{text}\n\n{boiler}"
        if i % 10 == 0:  # inside the first paragraph: as a paragraph of its own it would be boilerplate
            head, sep, tail = text.partition("\n\n")
            text = f"{head} Írjon: info{i}@pelda.hu, vagy lásd https://pelda.hu/oldal?id={i}.{sep}{tail}"
        records.append({"id": f"hu{i}", "text": text})
    records += [{"id": f"en{i}", "text": t} for i, t in enumerate(en)]
    rng.shuffle(records)
    corpus = write_records(tmp_path / "mixed.jsonl", records)
    out = tmp_path / "out"
    cfg = PrepareConfig(input=[str(corpus)], lang="hu", quality_filter=False, exact_dedup=False,
                        minhash_dedup=False, licenses=["MPL-2.0"])  # fmt: skip

    record = prepare(cfg, out)

    rows = {r["id"]: r["text"] for r in read_output(out)}
    assert not [k for k in rows if k.startswith("en")]
    assert sum(k.startswith("hu") for k in rows) >= 0.98 * len(hu)
    assert not [k for k, t in rows.items() if boiler in t]
    assert all(t.strip() for t in rows.values())
    mailed = [rows[f"hu{i}"] for i in range(0, len(hu), 10) if f"hu{i}" in rows]
    assert mailed and all("<EMAIL>" in t and "<URL>" in t and "@pelda.hu" not in t for t in mailed)
    steps = {s["step"]: s for s in record["steps"]}
    assert steps["language"]["dropped"].get("lang_en", 0) >= 0.9 * len(en)
    assert steps["boilerplate"]["paragraphs_removed"] >= len(with_boiler)
    card = (out / "DATACARD.md").read_text(encoding="utf-8")
    assert "MPL-2.0" in card and "lang_en" in card


# -------------------------------------------------------------------------------------- scripts


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/corpora (the shared parallel files)")
@pytest.mark.parametrize("lang", ["he", "th", "ru"])
def test_script_filter_on_parallel_files(lang: str) -> None:
    from datatrove.data import Document

    from langadapt.corpus.steps import ScriptFilter

    flt = ScriptFilter(lang, 0.6)
    pairs = list(iter_documents([SHARED / "parallel" / f"en-{lang}.jsonl.gz"], text_field=lang, max_docs=500))
    english = list(
        iter_documents([SHARED / "parallel" / f"en-{lang}.jsonl.gz"], text_field="en", max_docs=500)
    )
    keep = lambda t: flt.filter(Document(text=t, id="x"))[0]
    assert sum(map(keep, pairs)) >= 0.98 * len(pairs)
    assert sum(map(keep, english)) <= 0.01 * len(english)


# ---------------------------------------------------------------------------------- normaliser


def test_normaliser_placeholders_nfc_whitespace() -> None:
    from langadapt.corpus.steps import MojibakeFixer, TextNormalizer

    norm = TextNormalizer()
    text = "Lásd  https://example.com/a?b=1. Írj: jane.doe@example.org\t!\n\n\n\nKe\u0301t  sor \n"
    assert norm.format(text) == "Lásd <URL>. Írj: <EMAIL> !\n\nKét sor"
    assert TextNormalizer(url_placeholder="").format("see www.x.org now") == "see www.x.org now"
    assert MojibakeFixer().format("Ã¡rvÃ­ztÅ±rÅ‘") == "árvíztűrő"


# ------------------------------------------------------------------------------------------ resume


def test_relaunch_redoes_only_unfinished_tasks(tmp_path: Path, monkeypatch) -> None:
    from langadapt.corpus import boilerplate

    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", tiny.demo_texts("hu", n=120))
    out = tmp_path / "out"
    cfg = PrepareConfig(input=[str(corpus)], lang="hu", language_id=False, minhash_dedup=False)

    def crash(self, data, rank=0, world_size=1):
        raise RuntimeError("simulated crash")
        yield

    with monkeypatch.context() as m:
        m.setattr(boilerplate.BoilerplateRemover, "run", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            prepare(cfg, out)
    assert not out.exists() and (work_folder(out) / "started.json").exists()  # kept for the resume
    filter_log = scratch_dir(out) / "logs" / "filter"
    assert (filter_log / "completions" / "00000").exists()

    from langadapt.corpus.steps import CorpusReader

    reads = []
    original = CorpusReader.run
    monkeypatch.setattr(CorpusReader, "run", lambda self, *a, **k: reads.append(1) or original(self, *a, **k))
    record = prepare(cfg, out)

    assert reads == []  # the finished first stage was skipped; only the unfinished ones ran
    assert (out / "DONE").exists() and nothing_beside(out)
    assert record["steps"][0]["docs_out"] == 120 and record["output"]["documents"] > 0


def test_scratch_belongs_to_its_work_folder(tmp_path: Path) -> None:
    from langadapt.corpus.prepare import _pair_scratch
    from langadapt.errors import UserError

    out = tmp_path / "out"
    work, scratch = work_folder(out), scratch_dir(out)
    (scratch / "logs" / "filter" / "completions").mkdir(parents=True)  # left by an abandoned run
    work.mkdir()
    _pair_scratch(["/data/a.jsonl"], work, scratch)  # a fresh work folder: the stale completions go
    assert not scratch.exists() and (work / "inputs.json").exists()
    _pair_scratch(["/data/a.jsonl"], work, scratch)  # the same inputs: resumed
    with pytest.raises(UserError, match="other input files"):  # a glob that matches other files now
        _pair_scratch(["/data/a.jsonl", "/data/b.jsonl"], work, scratch)
