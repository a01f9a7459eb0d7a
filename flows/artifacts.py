"""Prefect artifacts of an edit: what a reviewer needs on the flow run's page.

A markdown summary (text, model, etas, seeds, store URIs, the MLflow run link), a table with
one row per output image, and the grid: an image artifact when MLflow's server can serve it
over http(s), else its store URI in the summary (a file:// or s3:// URI is not a web link).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

if TYPE_CHECKING:
    from flows.edit import EditSummary


def summary_markdown(summary: EditSummary) -> str:
    """The edit at a glance, with links to MLflow and the stored outputs."""
    spec = summary.spec
    generate = spec.generate
    mlflow = (
        f"[{summary.mlflow_run_id}]({summary.mlflow_run_url})"
        if summary.mlflow_run_url
        else (summary.mlflow_run_id or "not tracked")
    )
    lines = [
        f"# Imagic edit: {_escape(spec.text)}",
        "",
        "| | |",
        "|---|---|",
        f"| Input image | `{_escape(spec.image)}` |",
        f"| Target text | {_escape(spec.text)} |",
        f"| Model | `{_escape(spec.model)}` |",
        f"| etas | {', '.join(f'{eta:g}' for eta in generate.etas)} |",
        f"| seeds | {', '.join(str(seed) for seed in generate.seeds)} |",
        f"| Placement | {summary.placement} |",
        f"| Store | `{_escape(summary.store)}` |",
        f"| MLflow run | {mlflow} |",
        f"| Grid (rows: seeds, columns: etas) | `{_escape(summary.grid_uri)}` |",
        "",
        "| Stage | Key | Cached | Manifest | MLflow run |",
        "|---|---|---|---|---|",
    ]
    for name, stage in summary.stages.items():
        run = f"[{stage.mlflow_run_id}]({stage.mlflow_run_url})" if stage.mlflow_run_url else "-"
        lines.append(
            f"| {name} | `{stage.key}` | {'yes' if stage.cached else 'no'} | "
            f"`{_escape(stage.manifest_uri)}` | {run} |"
        )
    if summary.grid_url:
        lines += ["", f"![grid: rows are seeds, columns are etas]({summary.grid_url})"]
    return "\n".join(lines) + "\n"


def outputs_table(summary: EditSummary) -> list[dict[str, Any]]:
    """One row per generated image: its eta, seed and store URI."""
    return [{"eta": image.eta, "seed": image.seed, "uri": image.uri} for image in summary.images]


def publish_edit_artifacts(summary: EditSummary) -> None:
    """Attach the summary, the outputs table and the grid to the current flow run."""
    create_markdown_artifact(
        summary_markdown(summary), key="imagic-edit-summary", description="Imagic edit summary"
    )
    create_table_artifact(
        outputs_table(summary), key="imagic-edit-outputs", description="Generated images"
    )
    if summary.grid_url:
        create_image_artifact(
            summary.grid_url, key="imagic-edit-grid", description="Grid: rows seeds, columns etas"
        )


def _escape(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
