"""The shared corpus readers stream every supported format and name the file on bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.errors import UserError

DOCS = ["Első dokumentum.\nMásodik sora.", "Zweites Dokument 😀", "third"]


def test_txt_blank_line_separates_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(DOCS) + "\n\n\n", encoding="utf-8")
    assert list(iter_documents([path])) == DOCS


def test_jsonl_and_gz_with_custom_field(tmp_path):
    lines = "".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCS))
    (tmp_path / "c.jsonl").write_text(lines, encoding="utf-8")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(lines)
    for name in ("c.jsonl", "c.jsonl.gz"):
        assert list(iter_documents([tmp_path / name], text_field="body")) == DOCS


def test_parquet_and_saved_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    pq.write_table(pa.table({"text": DOCS}), tmp_path / "c.parquet")
    Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "ds"))
    assert list(iter_documents([tmp_path / "c.parquet"])) == DOCS
    assert list(iter_documents([tmp_path / "ds"])) == DOCS


def test_streams_lazily_and_honours_max_docs(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10_000)))
    stream = iter_documents([path])
    assert next(stream) == "doc 0"  # a generator: nothing was read ahead into a list
    assert len(list(iter_documents([path, path], max_docs=15_000))) == 15_000


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "not found"),
        ("empty.txt", b"\n\n", "holds no text"),
        ("bin.txt", b"\x00\x01\x02abc", "binary"),
        ("latin1.txt", "árvíztűrő".encode("iso-8859-2"), "not UTF-8"),
        ("bad.jsonl", b"{not json}\n", "not JSON"),
        ("nofield.jsonl", b'{"body": "x"}\n', "no field 'text'"),
        ("x.docx", b"PK", "unsupported corpus format"),
    ],
)
def test_bad_corpus_is_a_user_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        check_corpus([path])
    assert str(path) in str(err.value)
