"""The edit's Prefect artifacts: a markdown summary and an outputs table, built offline."""

from __future__ import annotations

import re
from typing import Any

from flows.artifacts import outputs_table, summary_markdown
from flows.edit import EditImage, EditSummary
from imagic.config import EditSpec
from imagic.stages.common import StageResult

STORE = "s3://imagic-store/prefix"
MLFLOW = "http://mlflow.example:5000"
GRID_URL = f"{MLFLOW}/get-artifact?path=grid.png&run_uuid=gen-run"


def stage(name: str, *, cached: bool, tracked: bool = True) -> StageResult:
    key = f"{name}/{name[0] * 32}"
    return StageResult(
        stage=name,
        key=key,
        store=STORE,
        manifest_uri=f"{STORE}/{key}/manifest.json",
        cached=cached,
        mlflow_run_id=f"{name}-run" if tracked else None,
        mlflow_run_url=f"{MLFLOW}/#/experiments/1/runs/{name}-run" if tracked else None,
        produced_by_run_id=f"{name}-run" if tracked else None,
    )


def make_summary(**changes: Any) -> EditSummary:
    spec = EditSpec(
        image="s3://inputs/bird.png",
        text="a bird | spreading its wings",
        model="tiny-sd",
        generate={"etas": [0.6, 0.75, 1.0], "seeds": [0, 7]},
    )
    generate_key = f"generate/{'g' * 32}"
    fields: dict[str, Any] = {
        "spec": spec,
        "placement": "local",
        "store": STORE,
        "stages": {
            "optimize": stage("optimize", cached=True),
            "finetune": stage("finetune", cached=False),
            "generate": stage("generate", cached=False, tracked=False),
        },
        "grid_uri": f"{STORE}/{generate_key}/grid.png",
        "grid_url": None,
        "images": [
            EditImage(eta=eta, seed=seed, uri=f"{STORE}/{generate_key}/s{seed}-e{eta}.png")
            for seed in (0, 7)
            for eta in (0.6, 0.75, 1.0)
        ],
        "mlflow_run_id": "edit-run",
        "mlflow_run_url": f"{MLFLOW}/#/experiments/1/runs/edit-run",
    }
    return EditSummary(**{**fields, **changes})


def cells(line: str) -> list[str]:
    """The cells of a markdown table row, split on unescaped pipes."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table_rows(markdown: str, first_header: str) -> list[list[str]]:
    """The body rows of the table whose header row starts with `first_header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if cells(line)[:1] == [first_header])
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return rows


def details(markdown: str) -> dict[str, str]:
    return dict(table_rows(markdown, ""))  # type: ignore[arg-type]


def test_summary_names_the_edit_with_the_text_escaped():
    markdown = summary_markdown(make_summary())
    assert markdown.splitlines()[0] == "# Imagic edit: a bird \\| spreading its wings"
    assert markdown.endswith("\n")
    info = details(markdown)
    assert info["Input image"] == "`s3://inputs/bird.png`"
    assert info["Target text"] == "a bird \\| spreading its wings"
    assert info["Model"] == "`tiny-sd`"
    assert info["etas"] == "0.6, 0.75, 1"
    assert info["seeds"] == "0, 7"
    assert info["Placement"] == "local"
    assert info["Store"] == f"`{STORE}`"
    assert info["Grid (rows: seeds, columns: etas)"] == f"`{STORE}/generate/{'g' * 32}/grid.png`"


def test_every_table_row_keeps_its_columns_even_with_pipes_and_newlines_in_the_text():
    spec = make_summary().spec.model_copy(update={"text": "a | b\nc || d"})
    markdown = summary_markdown(make_summary(spec=spec))
    assert "a \\| b c \\|\\| d" in markdown
    lines = markdown.splitlines()
    first = lines.index("| | |")
    second = lines.index("| Stage | Key | Cached | Manifest | MLflow run |")
    assert all(len(cells(line)) == 2 for line in lines[first : second - 1])
    assert all(len(cells(line)) == 5 for line in lines[second:] if line.startswith("|"))


def test_mlflow_run_is_a_link_when_its_url_is_known():
    info = details(summary_markdown(make_summary()))
    assert info["MLflow run"] == f"[edit-run]({MLFLOW}/#/experiments/1/runs/edit-run)"


def test_mlflow_run_is_its_plain_id_without_a_url():
    info = details(summary_markdown(make_summary(mlflow_run_url=None)))
    assert info["MLflow run"] == "edit-run"


def test_mlflow_run_is_not_tracked_without_a_run():
    info = details(summary_markdown(make_summary(mlflow_run_id=None, mlflow_run_url=None)))
    assert info["MLflow run"] == "not tracked"


def test_one_row_per_stage_in_order_with_cached_yes_or_no():
    rows = table_rows(summary_markdown(make_summary()), "Stage")
    assert rows == [
        [
            "optimize",
            f"`optimize/{'o' * 32}`",
            "yes",
            f"`{STORE}/optimize/{'o' * 32}/manifest.json`",
            f"[optimize-run]({MLFLOW}/#/experiments/1/runs/optimize-run)",
        ],
        [
            "finetune",
            f"`finetune/{'f' * 32}`",
            "no",
            f"`{STORE}/finetune/{'f' * 32}/manifest.json`",
            f"[finetune-run]({MLFLOW}/#/experiments/1/runs/finetune-run)",
        ],
        [
            "generate",
            f"`generate/{'g' * 32}`",
            "no",
            f"`{STORE}/generate/{'g' * 32}/manifest.json`",
            "-",
        ],
    ]


def test_grid_image_only_when_mlflow_can_serve_it():
    without = summary_markdown(make_summary())
    assert "![" not in without
    with_url = summary_markdown(make_summary(grid_url=GRID_URL))
    assert with_url.splitlines()[-1] == f"![grid: rows are seeds, columns are etas]({GRID_URL})"
    assert with_url.count("![") == 1
    assert with_url.startswith(without.rstrip("\n"))  # the grid is added, nothing else changes


def test_outputs_table_has_one_row_per_image():
    summary = make_summary()
    table = outputs_table(summary)
    assert len(table) == 6
    assert table[0] == {"eta": 0.6, "seed": 0, "uri": f"{STORE}/generate/{'g' * 32}/s0-e0.6.png"}
    assert table[-1] == {"eta": 1.0, "seed": 7, "uri": f"{STORE}/generate/{'g' * 32}/s7-e1.0.png"}
    assert [(row["seed"], row["eta"]) for row in table] == [
        (image.seed, image.eta) for image in summary.images
    ]
    assert outputs_table(make_summary(images=[])) == []
