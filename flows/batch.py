"""The `imagic-batch-edit` flow: every edit of a manifest, GPU work bounded by a Prefect limit.

Edits run side by side (one task each, on a thread pool), and every stage task carries the
`gpu` tag, so Prefect's concurrency limit on that tag (`prefect concurrency-limit create gpu
1`) decides how many stages use the GPU at once, across this batch and every other flow. The
flow creates that limit with `gpu_slots` slots when the server has none.

One failing edit is reported and the others finish. The outcome of every row goes to a table
artifact and to `<manifest>.summary.json` next to the manifest; a rerun skips the edits
that summary records as done in the same store (and would be all cache hits anyway).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.edit import EditSummary, Placement, imagic_edit
from flows.manifest import CheckedManifest, ManifestRow, default_row_id, edit_id, load_manifest
from flows.stages import GPU_TAG
from imagic.errors import ImagicError
from imagic.storage import open_store, read_uri_bytes, write_uri_bytes
from imagic.tracking import TrackingOptions

MAX_PARALLEL_EDITS = 4
"""Edits in flight at once; the GPU concurrency limit, not this, bounds GPU work."""

Status = Literal["done", "skipped", "failed", "invalid"]


class RowOutcome(BaseModel):
    """What happened to one row of the manifest."""

    row: int
    id: str
    status: Status = Field(description="done, skipped (done by an earlier run), failed, invalid.")
    edit_id: str | None = None
    text: str | None = None
    image: str | None = None
    grid_uri: str | None = None
    mlflow_run_url: str | None = None
    error: str | None = None


class BatchSummary(BaseModel):
    manifest_uri: str
    summary_uri: str
    rows: list[RowOutcome]

    def count(self, status: Status) -> int:
        return sum(row.status == status for row in self.rows)


class BatchEditFailedError(Exception):
    """Some rows of the batch failed or were invalid; the others finished."""


@task(name="edit-row", task_run_name="row {row.row}: {row.id}", cache_policy=NO_CACHE)
def edit_row(
    row: ManifestRow, placement: Placement, store: str | None, tracking: TrackingOptions
) -> EditSummary:
    """One edit of the batch, as its own `imagic-edit` flow run."""
    return imagic_edit(row.spec, placement=placement, store=store, tracking=tracking)


@flow(
    name="imagic-batch-edit",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_EDITS),
    persist_result=False,
)
def batch_edit(
    manifest_uri: str,
    model: str | None = None,
    placement: Placement = "local",
    store: str | None = None,
    tracking: TrackingOptions = TrackingOptions(),  # noqa: B008  (immutable pydantic model)
    gpu_slots: Annotated[int, Field(ge=1)] = 1,
) -> BatchSummary:
    """Run every edit of a JSON or CSV manifest (image, text, optional per-row parameters).

    Args:
        manifest_uri: the manifest in the store (s3://bucket/batches/edits.csv) or a path.
            Relative image paths in it are relative to the manifest's folder.
        model: the model of rows that name none (a local diffusers folder or hub id).
        placement: `local` or `deployments`, as for `imagic-edit`.
        store: artifact store URI; default IMAGIC_STORE.
        tracking: MLflow tracking options for every edit.
        gpu_slots: size of the `gpu` tag concurrency limit, created only when missing.
    """
    logger = get_run_logger()
    checked = load_manifest(manifest_uri, default_model=model)
    if checked.problems:
        logger.error(checked.report())
    summary_uri = summary_uri_for(manifest_uri)
    finished = finished_edits(summary_uri)
    ensure_gpu_limit(gpu_slots)

    store_uri = open_store(store).uri
    outcomes = invalid_outcomes(checked)
    futures: list[tuple[ManifestRow, PrefectFuture[EditSummary]]] = []
    for row in checked.edits:
        done = finished.get(edit_id(row.spec))
        if done is not None and (done.grid_uri or "").startswith(f"{store_uri}/"):
            outcomes.append(
                done.model_copy(update={"row": row.row, "id": row.id, "status": "skipped"})
            )
        else:
            futures.append((row, edit_row.submit(row, placement, store, tracking)))
    for row, future in futures:
        outcomes.append(_outcome(row, future))

    summary = BatchSummary(
        manifest_uri=manifest_uri,
        summary_uri=summary_uri,
        rows=sorted(outcomes, key=lambda outcome: outcome.row),
    )
    write_uri_bytes(summary_uri, summary.model_dump_json(indent=2).encode())
    publish_batch_artifacts(summary)
    bad = summary.count("failed") + summary.count("invalid")
    if bad:
        raise BatchEditFailedError(
            f"{bad} of {len(summary.rows)} edits failed or were invalid (the others finished); "
            f"see {summary_uri} and the run's artifacts."
        )
    return summary


def _outcome(row: ManifestRow, future: PrefectFuture[EditSummary]) -> RowOutcome:
    base = {
        "row": row.row,
        "id": row.id,
        "edit_id": edit_id(row.spec),
        "text": row.spec.text,
        "image": row.spec.image,
    }
    future.wait()
    if future.state.is_completed():
        result: EditSummary = future.result()
        return RowOutcome(
            **base, status="done", grid_uri=result.grid_uri, mlflow_run_url=result.mlflow_run_url
        )
    error = future.state.result(raise_on_failure=False)
    message = str(error) if isinstance(error, ImagicError) else f"{type(error).__name__}: {error}"
    return RowOutcome(**base, status="failed", error=message)


def invalid_outcomes(checked: CheckedManifest) -> list[RowOutcome]:
    return [
        RowOutcome(row=number, id=default_row_id(number), status="invalid", error=problem)
        for number, problem in checked.problems.items()
    ]


def summary_uri_for(manifest_uri: str) -> str:
    """`<manifest>.summary.json` next to it: one summary per manifest (edits.csv and
    edits.json in one folder keep separate summaries)."""
    return f"{manifest_uri.rstrip('/')}.summary.json"


def finished_edits(summary_uri: str) -> dict[str, RowOutcome]:
    """Edits an earlier run of this manifest finished, by edit id (none when no summary)."""
    try:
        previous = BatchSummary.model_validate(json.loads(read_uri_bytes(summary_uri)))
    except (ImagicError, ValueError):
        return {}
    return {
        row.edit_id: row
        for row in previous.rows
        if row.status in ("done", "skipped") and row.edit_id is not None
    }


def ensure_gpu_limit(slots: int) -> None:
    """Create the `gpu` tag concurrency limit when the server has none (never resize one)."""
    name = f"tag:{GPU_TAG}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots)
            )
            get_run_logger().info("created concurrency limit %s with %d slot(s)", name, slots)


def publish_batch_artifacts(summary: BatchSummary) -> None:
    create_table_artifact(
        [row.model_dump(exclude={"edit_id"}) for row in summary.rows],
        key="imagic-batch-summary",
        description=f"Batch {summary.manifest_uri}",
    )
    counts = ", ".join(
        f"{summary.count(status)} {status}" for status in ("done", "skipped", "failed", "invalid")
    )
    create_markdown_artifact(
        f"# Batch edit\n\nManifest `{summary.manifest_uri}`: {counts}.\n\n"
        f"Summary: `{summary.summary_uri}`\n",
        key="imagic-batch-report",
    )
