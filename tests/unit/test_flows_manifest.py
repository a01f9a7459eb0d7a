"""Batch manifests: every bad row is reported with its number, the field and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flows import manifest
from flows.manifest import (
    ManifestError,
    ManifestRow,
    allowed_columns,
    edit_id,
    load_manifest,
    parent_uri,
    parse_rows,
    resolve_image_uri,
    validate_rows,
)
from imagic.config import EditSpec, FinetuneParams
from imagic.errors import ImagicError, InvalidParamsError

MODEL = "tiny-sd"


def save_png(path: Path, color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    Image.new("RGB", (64, 64), color).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with two small real images, a.png and b.png (a manifest's neighbours)."""
    save_png(tmp_path / "a.png")
    save_png(tmp_path / "b.png", (20, 90, 210))
    return tmp_path


def good(image: str = "a.png", text: str = "a dog", **extra: Any) -> dict[str, Any]:
    return {"image": image, "text": text, "model": MODEL, **extra}


def check(rows: list[Any], folder: Path, **kwargs: Any) -> manifest.CheckedManifest:
    return validate_rows(rows, base_uri=str(folder), **kwargs)


# -- parse_rows: CSV ---------------------------------------------------------------------------


def test_csv_rows_strip_cells_and_drop_empty_ones_so_they_mean_the_default():
    data = (
        b" image , text ,model,optimize.steps,generate.etas\n"
        b"a.png,a dog,tiny-sd,,\n"
        b"b.png, a cat ,tiny-sd,20,0.5 0.7\n"
    )
    assert parse_rows("batches/edits.csv", data) == [
        {"image": "a.png", "text": "a dog", "model": MODEL},
        {
            "image": "b.png",
            "text": "a cat",
            "model": MODEL,
            "optimize.steps": "20",
            "generate.etas": "0.5 0.7",
        },
    ]


def test_csv_with_fewer_cells_than_the_header_uses_the_defaults():
    assert parse_rows("m.csv", b"image,text,model\na.png,a dog\n") == [
        {"image": "a.png", "text": "a dog"}
    ]


def test_csv_with_a_byte_order_mark_keeps_the_first_column_name():
    rows = parse_rows("m.csv", "\ufeffimage,text\na.png,a dog\n".encode())
    assert rows == [{"image": "a.png", "text": "a dog"}]


def test_csv_is_recognised_by_its_content_when_the_name_has_no_extension():
    assert parse_rows("s3://b/batch/manifest", b"image,text\na.png,a dog\n") == [
        {"image": "a.png", "text": "a dog"}
    ]


def test_csv_row_with_more_cells_than_the_header_is_reported_with_the_extra_cells(
    folder: Path,
):
    rows = parse_rows("m.csv", b"image,text,model\na.png,a dog,tiny-sd,0.5,0.7\nb.png,a cat,x\n")
    assert rows[0] == {"__extra_cells__": ["0.5", "0.7"]}
    checked = check(rows, folder)
    assert [edit.row for edit in checked.edits] == [2]
    problem = checked.problems[1]
    assert "more cells than header columns" in problem
    assert "'0.5', '0.7'" in problem
    assert "quote" in problem  # the fix: a cell with commas must be quoted


def test_csv_header_with_an_empty_column_name_is_refused():
    with pytest.raises(ManifestError, match=r"'m\.csv'.*empty column names.*image,text"):
        parse_rows("m.csv", b"image,,text\na.png,x,a dog\n")


def test_csv_with_only_a_header_has_no_edits():
    with pytest.raises(ManifestError, match=r"'m\.csv': the manifest has no edits; add at least"):
        parse_rows("m.csv", b"image,text\n")


# -- parse_rows: JSON --------------------------------------------------------------------------


def test_json_list_of_rows():
    rows = [good(), good("b.png", "a cat", **{"optimize.steps": 5})]
    assert parse_rows("m.json", json.dumps(rows).encode()) == rows


def test_json_object_with_edits():
    rows = [good()]
    assert parse_rows("m.json", json.dumps({"edits": rows}).encode()) == rows


def test_json_is_recognised_by_its_content_when_the_name_has_no_extension():
    assert parse_rows("/data/manifest", b'  [{"image": "a.png", "text": "x"}]') == [
        {"image": "a.png", "text": "x"}
    ]


def test_json_with_nested_stage_parameters_becomes_the_edit_spec(folder: Path):
    data = json.dumps(
        [good(generate={"etas": [0.5, 0.7], "seeds": [3]}, optimize={"steps": 20})]
    ).encode()
    (edit,) = check(parse_rows("m.json", data), folder).edits
    assert edit.spec.generate.etas == [0.5, 0.7]
    assert edit.spec.generate.seeds == [3]
    assert edit.spec.optimize.steps == 20
    assert edit.spec.finetune == FinetuneParams()


@pytest.mark.parametrize(
    ("data", "got"),
    [
        (b'{"image": "a.png", "text": "a dog"}', "got a dict"),
        (b'{"edits": {"image": "a.png"}}', "got a dict"),
        (b'{"edits": [], "version": 1}', "got a dict"),
        (b'"a.png"', "got a str"),
        (b"12", "got a int"),
    ],
)
def test_json_that_is_not_a_list_of_edits_is_refused(data: bytes, got: str):
    with pytest.raises(ManifestError) as info:
        parse_rows("s3://b/m.json", data)
    message = str(info.value)
    assert "'s3://b/m.json'" in message
    assert 'JSON must be a list of edits or {"edits": [...]}' in message
    assert got in message


def test_invalid_json_names_the_line_and_column():
    data = b'[\n  {"image": "a.png",\n   "text": }\n]\n'
    with pytest.raises(ManifestError) as info:
        parse_rows("m.json", data)
    message = str(info.value)
    assert "'m.json': not valid JSON (Expecting value at line 3, column 12)" in message
    assert "fix the JSON" in message


def test_empty_json_list_has_no_edits():
    with pytest.raises(ManifestError, match="has no edits"):
        parse_rows("m.json", b"[]")


# -- parse_rows: unusable files ----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n  "])
def test_empty_or_whitespace_manifest_is_refused(data: bytes):
    with pytest.raises(ManifestError) as info:
        parse_rows("s3://b/x/edits.csv", data)
    message = str(info.value)
    assert "'s3://b/x/edits.csv'" in message
    assert "the manifest is empty; add at least one edit (columns image,text)" in message


def test_manifest_that_is_not_utf8_names_the_byte():
    with pytest.raises(ManifestError) as info:
        parse_rows("m.csv", b"image,text\n\xff\xfe.png,a dog\n")
    message = str(info.value)
    assert "'m.csv': not UTF-8 text (byte 11)" in message
    assert "JSON or CSV" in message


def test_manifest_that_is_neither_json_nor_csv_is_refused():
    with pytest.raises(ManifestError) as info:
        parse_rows("notes.txt", b"edit the dog please\nand the cat\n")
    message = str(info.value)
    assert "'notes.txt': neither JSON nor CSV" in message
    assert ".json file" in message
    assert ".csv file with a header line such as image,text" in message


def test_too_many_rows_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(manifest, "MAX_ROWS", 2)
    with pytest.raises(ManifestError, match="3 edits is more than 2; split it"):
        parse_rows("m.json", json.dumps([good()] * 3).encode())


def test_manifest_error_is_a_user_error():
    assert issubclass(ManifestError, InvalidParamsError)
    assert issubclass(ManifestError, ImagicError)


# -- validate_rows -----------------------------------------------------------------------------


def test_good_rows_become_edits_with_resolved_images_and_default_ids(folder: Path):
    checked = check([good(), good("b.png", "a cat", id="cat-1")], folder)
    assert checked.problems == {}
    assert checked.edits == [
        ManifestRow(
            row=1, id="row-1", spec=EditSpec(image=str(folder / "a.png"), text="a dog", model=MODEL)
        ),
        ManifestRow(
            row=2,
            id="cat-1",
            spec=EditSpec(image=str(folder / "b.png"), text="a cat", model=MODEL),
        ),
    ]


def test_unknown_columns_are_listed_with_the_allowed_ones(folder: Path):
    rows = [good(colour="red", **{"optimise.steps": "5"}), good("b.png")]
    checked = check(rows, folder)
    problem = checked.problems[1]
    assert "unknown column(s) colour, optimise.steps" in problem
    assert "allowed: " in problem
    allowed = problem.split("allowed: ", 1)[1].split(", ")
    assert sorted(allowed) == sorted(allowed_columns())
    assert "optimize.steps" in allowed
    assert [edit.row for edit in checked.edits] == [2]


def test_nested_json_unknown_stage_parameter_is_named_with_its_stage(folder: Path):
    checked = check([good(generate={"eta": [0.5]}), good("b.png")], folder)
    assert "unknown column(s) generate.eta" in checked.problems[1]


@pytest.mark.parametrize(
    ("row", "missing"),
    [
        ({"text": "a dog", "model": MODEL}, "missing image;"),
        ({"image": "a.png", "model": MODEL}, "missing text;"),
        ({"image": "a.png", "text": "a dog"}, "missing model;"),
        ({"model": MODEL}, "missing image, text;"),
    ],
)
def test_missing_required_columns_are_named(folder: Path, row: dict[str, Any], missing: str):
    checked = check([row, good("b.png")], folder)
    problem = checked.problems[1]
    assert missing in problem
    assert "every row needs an image and a text" in problem
    assert "pass the flow's `model` parameter" in problem


def test_model_comes_from_default_model_when_the_row_has_none(folder: Path):
    checked = check(
        [{"image": "a.png", "text": "a dog"}, good("b.png", model="other")],
        folder,
        default_model="default-sd",
    )
    assert [edit.spec.model for edit in checked.edits] == ["default-sd", "other"]


def test_missing_text_with_a_default_model_does_not_ask_for_a_model(folder: Path):
    checked = check([{"image": "a.png"}, good("b.png")], folder, default_model="default-sd")
    problem = checked.problems[1]
    assert problem.startswith("missing text;")
    assert "model" not in problem


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("optimize.steps", "0", "optimize.steps = '0': Input should be greater than 0"),
        ("finetune.lora", "maybe", "finetune.lora = 'maybe'"),
        ("generate.etas", "0.5 2", "generate.etas = ['0.5', '2']: every eta must be in [0, 1.5]"),
        ("generate.seeds", "1 1", "generate.seeds = ['1', '1']: seeds must not repeat"),
        ("device", "gpu", "device = 'gpu': use one of auto, cpu, mps, cuda, cuda:N"),
    ],
)
def test_bad_params_name_the_row_the_field_and_the_value(
    folder: Path, column: str, value: str, expected: str
):
    checked = check([good("b.png"), good(**{column: value})], folder)
    assert [edit.row for edit in checked.edits] == [1]
    assert expected in checked.problems[2]
    assert f"  row 2: invalid EditSpec (1 problem(s)):\n  {expected}" in checked.report()


def test_duplicate_rows_report_the_later_row_and_the_earlier_row_number(folder: Path):
    rows = [
        good(**{"generate.etas": "0.5 0.7"}),
        good("b.png"),
        # the same edit written differently: absolute path, JSON list instead of a list cell
        good(str(folder / "a.png"), generate={"etas": [0.5, 0.7]}),
    ]
    checked = check(rows, folder)
    assert [edit.row for edit in checked.edits] == [1, 2]
    assert checked.problems == {
        3: "duplicates row 1 (same image, text and parameters); remove one of them."
    }


def test_duplicate_ids_name_the_id_and_the_row_that_has_it(folder: Path):
    checked = check([good(id="dog"), good("b.png", id="dog")], folder)
    assert [edit.id for edit in checked.edits] == ["dog"]
    problem = checked.problems[2]
    assert "id = 'dog' is already used by row 1" in problem
    assert "ids must be unique" in problem


def test_row_pointing_at_a_missing_image_names_the_path_and_the_fix(folder: Path):
    checked = check([good("missing.png"), good("b.png")], folder)
    problem = checked.problems[1]
    assert f"image '{folder / 'missing.png'}': file does not exist" in problem
    assert "Fix: check the path" in problem


def test_row_pointing_at_a_file_that_is_not_an_image_is_refused(folder: Path):
    (folder / "notes.png").write_text("not a picture")
    checked = check([good("notes.png"), good("b.png")], folder)
    assert "is not a recognised image format" in checked.problems[1]


def test_row_that_is_not_an_object_is_refused(folder: Path):
    checked = check([["a.png", "a dog"], good("b.png")], folder)
    assert "expected an object with image and text, got ['a.png', 'a dog']" in (checked.problems[1])


@pytest.mark.parametrize("cell", ["0.5 0.7", "0.5,0.7", "0.5;0.7", " 0.5 ;  0.7 ", "0.5, 0.7"])
def test_list_cells_split_on_spaces_commas_or_semicolons(folder: Path, cell: str):
    (edit,) = check([good(**{"generate.etas": cell, "generate.seeds": "3;4"})], folder).edits
    assert edit.spec.generate.etas == [0.5, 0.7]
    assert edit.spec.generate.seeds == [3, 4]


def test_quoted_csv_list_cell_end_to_end(folder: Path):
    data = b'image,text,model,generate.etas\na.png,a dog,tiny-sd,"0.5,0.7"\n'
    (edit,) = check(parse_rows("m.csv", data), folder).edits
    assert edit.spec.generate.etas == [0.5, 0.7]


def test_csv_cells_are_converted_to_the_field_types(folder: Path):
    row = good(
        **{"finetune.lora": "true", "max_megapixels": "2.5", "finetune.learning_rate": "3e-4"}
    )
    (edit,) = check([row], folder).edits
    assert edit.spec.finetune.lora is True
    assert edit.spec.finetune.learning_rate == pytest.approx(3e-4)
    assert edit.spec.max_megapixels == 2.5


def test_json_nulls_mean_the_default_like_empty_csv_cells(folder: Path):
    rows = [
        {"id": None, "image": "a.png", "text": "a dog", "model": None, "optimize": {"steps": None}},
        {"id": None, "image": "b.png", "text": "a cat", "model": None, "generate.etas": None},
    ]
    checked = check(rows, folder, default_model="default-sd")
    assert checked.problems == {}
    assert [edit.id for edit in checked.edits] == ["row-1", "row-2"]
    assert {edit.spec.model for edit in checked.edits} == {"default-sd"}
    assert checked.edits[0].spec.optimize.steps == 500
    assert checked.edits[1].spec.generate.etas == [0.6, 0.7, 0.8]


def test_manifest_where_every_row_is_bad_raises_with_every_problem(folder: Path):
    rows = [good("missing.png"), good(**{"optimize.steps": "0"}), {"text": "x", "model": MODEL}]
    with pytest.raises(ManifestError) as info:
        check(rows, folder)
    message = str(info.value)
    assert message.startswith("the batch manifest has 3 bad row(s):\n")
    assert "  row 1: image '" in message
    assert "missing.png': file does not exist" in message
    assert "  row 2: invalid EditSpec" in message
    assert "optimize.steps = '0'" in message
    assert "  row 3: missing image;" in message
    assert message.endswith("No row is usable; nothing was run.")


def test_good_rows_run_and_bad_rows_are_keyed_by_their_1_based_row_number(folder: Path):
    rows = [
        good(),
        good("missing.png"),
        good("b.png"),
        good("a.png", "a cat", colour="red"),
        good(),
    ]
    checked = check(rows, folder)
    assert [(edit.row, edit.id) for edit in checked.edits] == [(1, "row-1"), (3, "row-3")]
    assert sorted(checked.problems) == [2, 4, 5]
    assert "file does not exist" in checked.problems[2]
    assert "unknown column(s) colour" in checked.problems[4]
    assert checked.problems[5].startswith("duplicates row 1 ")
    report = checked.report().splitlines()
    assert report[0] == "the batch manifest has 3 bad row(s):"
    assert [line.split(":")[0] for line in report[1:]] == ["  row 2", "  row 4", "  row 5"]


# -- image URIs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "base", "expected"),
    [
        ("a.png", "/data/batch", "/data/batch/a.png"),
        ("imgs/a.png", "batch", "batch/imgs/a.png"),
        ("a.png", "", "a.png"),
        ("image.png", "s3://bucket/folder", "s3://bucket/folder/image.png"),
        ("imgs/image.png", "s3://bucket/folder", "s3://bucket/folder/imgs/image.png"),
        ("image.png", "s3://bucket", "s3://bucket/image.png"),
        ("./image.png", "s3://bucket/folder", "s3://bucket/folder/image.png"),
        ("../shared/image.png", "s3://bucket/folder/sub", "s3://bucket/folder/shared/image.png"),
        ("a.png", "file:///data/batch", "file:///data/batch/a.png"),
        ("/abs/a.png", "s3://bucket/folder", "/abs/a.png"),
        ("~/a.png", "/data", "~/a.png"),
        ("s3://other/a.png", "/data", "s3://other/a.png"),
        ("file:///x/a.png", "s3://bucket/folder", "file:///x/a.png"),
    ],
)
def test_resolve_image_uri(image: str, base: str, expected: str):
    assert resolve_image_uri(image, base) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/x/m.csv", "s3://b/x"),
        ("s3://bucket/m.csv", "s3://bucket"),
        ("/data/m.csv", "/data"),
        ("batches/m.json", "batches"),
        ("m.csv", ""),
        ("file:///data/m.json", "file:///data"),
    ],
)
def test_parent_uri(uri: str, expected: str):
    assert parent_uri(uri) == expected


# -- load_manifest -----------------------------------------------------------------------------


def test_load_manifest_resolves_images_next_to_a_local_manifest(folder: Path):
    path = folder / "edits.csv"
    path.write_text("image,text\na.png,a dog\nb.png,a cat\n")
    checked = load_manifest(str(path), default_model=MODEL)
    assert checked.problems == {}
    assert [edit.spec.image for edit in checked.edits] == [
        str(folder / "a.png"),
        str(folder / "b.png"),
    ]


def test_load_manifest_from_a_file_uri(folder: Path):
    path = folder / "edits.json"
    path.write_text(json.dumps({"edits": [good(), good("b.png")]}))
    checked = load_manifest(path.as_uri())
    assert [edit.spec.image for edit in checked.edits] == [
        (folder / "a.png").as_uri(),
        (folder / "b.png").as_uri(),
    ]


def test_load_manifest_of_a_missing_file_names_the_uri_and_the_fix(tmp_path: Path):
    uri = str(tmp_path / "absent.csv")
    with pytest.raises(ManifestError) as info:
        load_manifest(uri)
    message = str(info.value)
    assert f"manifest_uri = {uri!r}: cannot read the manifest" in message
    assert "Upload it first, or fix the URI." in message


# -- edit_id -----------------------------------------------------------------------------------


def test_edit_id_is_stable_for_equal_specs():
    first = EditSpec(image="/d/a.png", text="a dog", model=MODEL, generate={"etas": [0.5]})
    second = EditSpec.model_validate(
        {"generate": {"etas": ["0.5"]}, "model": MODEL, "text": "a dog", "image": "/d/a.png"}
    )
    assert edit_id(first) == edit_id(second)
    assert re.fullmatch(r"[0-9a-f]{16}", edit_id(first))
    # the fine-tuning learning rate is resolved, so the default and its value are one edit
    explicit = EditSpec(
        image="/d/a.png",
        text="a dog",
        model=MODEL,
        generate={"etas": [0.5]},
        finetune={"learning_rate": 2e-6},
    )
    assert edit_id(explicit) == edit_id(first)


@pytest.mark.parametrize(
    "change",
    [
        {"text": "a cat"},
        {"image": "/d/b.png"},
        {"model": "other-sd"},
        {"generate": {"etas": [0.5, 0.6]}},
        {"optimize": {"seed": 1}},
        {"finetune": {"lora": True}},
    ],
)
def test_edit_id_differs_for_different_edits(change: dict[str, Any]):
    base = {"image": "/d/a.png", "text": "a dog", "model": MODEL, "generate": {"etas": [0.5]}}
    assert edit_id(EditSpec(**base)) != edit_id(EditSpec(**{**base, **change}))
