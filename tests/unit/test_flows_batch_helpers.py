"""The batch flow's summary file: where it lives, and which edits a rerun may skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.batch import (
    BatchSummary,
    RowOutcome,
    finished_edits,
    invalid_outcomes,
    summary_uri_for,
)
from flows.manifest import CheckedManifest


@pytest.mark.parametrize(
    ("manifest_uri", "summary_uri"),
    [
        ("s3://b/x/edits.csv", "s3://b/x/edits.csv.summary.json"),
        ("s3://b/edits.json", "s3://b/edits.json.summary.json"),
        ("/data/m.json", "/data/m.json.summary.json"),
        ("m.csv", "m.csv.summary.json"),
        ("batches/nightly.v2.csv", "batches/nightly.v2.csv.summary.json"),
        ("file:///data/edits", "file:///data/edits.summary.json"),
    ],
)
def test_summary_uri_sits_next_to_the_manifest(manifest_uri: str, summary_uri: str):
    assert summary_uri_for(manifest_uri) == summary_uri


def outcome(row: int, status: str, edit_id: str | None, **extra: str) -> RowOutcome:
    return RowOutcome(row=row, id=f"id-{row}", status=status, edit_id=edit_id, **extra)  # type: ignore[arg-type]


def write_summary(path: Path, rows: list[RowOutcome]) -> str:
    summary = BatchSummary(manifest_uri="m.csv", summary_uri=str(path), rows=rows)
    path.write_bytes(summary.model_dump_json(indent=2).encode())  # as batch_edit writes it
    return str(path)


def test_finished_edits_are_the_done_and_skipped_rows_by_edit_id(tmp_path: Path):
    rows = [
        outcome(1, "done", "e1", grid_uri="s3://s/generate/k/grid.png"),
        outcome(2, "failed", "e2", error="StorageUnavailableError: overloaded"),
        outcome(3, "skipped", "e3"),
        outcome(4, "invalid", None, error="missing text"),
        outcome(5, "done", None),  # no edit id: nothing to match a rerun's row against
        outcome(6, "invalid", "e6"),
    ]
    finished = finished_edits(write_summary(tmp_path / "m.summary.json", rows))
    assert finished == {"e1": rows[0], "e3": rows[2]}
    assert finished["e1"].grid_uri == "s3://s/generate/k/grid.png"


def test_finished_edits_without_a_summary_is_empty(tmp_path: Path):
    assert finished_edits(str(tmp_path / "absent.summary.json")) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"manifest_uri": "m.csv"}',
        b'{"manifest_uri": "m.csv", "summary_uri": "s", "rows": [{"row": 1, "status": "?"}]}',
    ],
    ids=["bad-json", "empty", "not-utf8", "list", "no-rows", "bad-row"],
)
def test_finished_edits_of_a_corrupt_summary_is_empty(tmp_path: Path, content: bytes):
    path = tmp_path / "m.summary.json"
    path.write_bytes(content)
    assert finished_edits(str(path)) == {}


def test_finished_edits_of_a_folder_is_empty(tmp_path: Path):
    assert finished_edits(str(tmp_path)) == {}


def test_invalid_rows_become_invalid_outcomes_with_their_problem():
    checked = CheckedManifest(edits=[], problems={2: "missing text", 5: "duplicates row 1"})
    assert invalid_outcomes(checked) == [
        RowOutcome(row=2, id="row-2", status="invalid", error="missing text"),
        RowOutcome(row=5, id="row-5", status="invalid", error="duplicates row 1"),
    ]


def test_batch_summary_counts_rows_by_status():
    summary = BatchSummary(
        manifest_uri="m.csv",
        summary_uri="m.summary.json",
        rows=[outcome(1, "done", "a"), outcome(2, "done", "b"), outcome(3, "failed", "c")],
    )
    assert [summary.count(status) for status in ("done", "skipped", "failed", "invalid")] == [
        2,
        0,
        1,
        0,
    ]
