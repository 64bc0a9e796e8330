"""Atomic outputs: a failed stage leaves nothing behind; an existing output is a user error."""

from __future__ import annotations

import json

import pytest

from langadapt.errors import UserError
from langadapt.runs import STAGE_JSON, atomic_output_dir, is_done, mark_done, stage_record, write_json_atomic


def test_failure_leaves_no_output(tmp_path):
    out = tmp_path / "stage"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-stage")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_success_renames_and_records(tmp_path):
    out = tmp_path / "stage"
    with atomic_output_dir(out) as tmp:
        write_json_atomic(tmp / STAGE_JSON, stage_record("demo", {"a": 1}, 1.23456, {"figure": 3}))
        mark_done(tmp)
    record = json.loads((out / "stage.json").read_text())
    assert record["config"] == {"a": 1} and record["figure"] == 3 and "langadapt_version" in record
    assert is_done(out)
    with pytest.raises(UserError, match="already exists"), atomic_output_dir(out):
        pass


def test_an_option_added_later_keeps_a_finished_stage_finished():
    from langadapt.runs import changed_keys

    before = {"model": "m", "lr": 0.1}  # recorded by a langadapt without the dtype option
    defaults = {"lr": 0.1, "dtype": "auto"}
    assert changed_keys(before, {"model": "m", "lr": 0.1, "dtype": "auto"}, defaults=defaults) == []
    assert changed_keys(before, {"model": "m", "lr": 0.1, "dtype": "float32"}, defaults=defaults) == ["dtype"]
    assert changed_keys(before, {"model": "m", "lr": 0.2, "dtype": "auto"}, defaults=defaults) == ["lr"]
    assert changed_keys(before, {"model": "m", "lr": 0.1, "dtype": "auto"}) == ["dtype"]  # no defaults known
