"""Stages A, B and C as Prefect flows, each deployable to its own container and GPU work pool.

Each stage flow runs one task that wraps the container step (`steps.<stage>.run`): the task
carries the `gpu` tag (so a Prefect concurrency limit on that tag bounds GPU work across all
edits and batches) and retries that fire only for transient storage or network
failures. A user error (bad image, unknown model, missing earlier stage...) fails at once:
retrying it would only repeat the same message.

The stage flow carries the timeout (a task's timeout cannot interrupt it in a worker
thread). A stage flow records its result in the artifact store under its flow run's id, so that an
orchestrator that started it as a deployment run (possibly in another container) can read
the result back with nothing but the store URI and the run id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import State
from prefect.tasks import Task

import steps.finetune
import steps.generate
import steps.optimize
from imagic.errors import ImagicError, StorageUnavailableError
from imagic.method import StageProgress
from imagic.stages import FinetuneRequest, GenerateRequest, OptimizeRequest, StageResult
from imagic.storage import ArtifactStore, join_key, open_store

GPU_TAG = "gpu"
STAGE_TIMEOUT_S = 6 * 3600
"""A stage that runs longer than this is stuck (SD 1.5 stage B takes minutes on one GPU)."""
RETRY_DELAYS_S = [10, 60, 180]
PROGRESS_EVERY = 50

STAGES = ("optimize", "finetune", "generate")
STAGE_DEPLOYMENTS = {stage: f"imagic-{stage}/{stage}" for stage in STAGES}
"""`flow-name/deployment-name` of each stage's deployment in prefect.yaml."""


def is_transient(error: BaseException) -> bool:
    """Whether retrying can help: an unreachable or overloaded store or network, nothing else."""
    if isinstance(error, StorageUnavailableError):
        return True
    if isinstance(error, ImagicError):
        return False  # the user must change something first
    return isinstance(error, ConnectionError | TimeoutError)


def retry_if_transient(_task: Task[..., Any], _task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry_condition_fn: retry transient failures only."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def log_progress(event: StageProgress) -> None:
    """Progress and losses of a stage, every PROGRESS_EVERY steps, in the Prefect run's logs."""
    if event.step % PROGRESS_EVERY == 0 or event.step == event.total:
        loss = f" loss={event.loss:.5f}" if event.loss is not None else ""
        get_run_logger().info("%s step %d/%d%s", event.stage, event.step, event.total, loss)


def _stage_task(stage: str, run: Callable[..., StageResult]) -> Task[..., StageResult]:
    """The GPU task of a stage: the step's `run` with the progress going to Prefect's logs."""

    def run_stage(request: Any) -> StageResult:
        return run(request, log_progress)

    run_stage.__doc__ = f"Stage {stage}: the container step, with progress in Prefect's logs."
    return task(
        run_stage,
        name=stage,
        tags=[GPU_TAG],
        retries=len(RETRY_DELAYS_S),
        retry_delay_seconds=RETRY_DELAYS_S,
        retry_condition_fn=retry_if_transient,
        cache_policy=NO_CACHE,  # the artifact store is the cache (content-addressed keys)
        persist_result=False,
    )


_optimize_task = _stage_task("optimize", steps.optimize.run)
_finetune_task = _stage_task("finetune", steps.finetune.run)
_generate_task = _stage_task("generate", steps.generate.run)


def result_key(flow_run_id: str) -> str:
    """Where a stage flow run records its result in the store."""
    return join_key("prefect-flow-runs", flow_run_id, "result.json")


def record_result(result: StageResult) -> None:
    """Store the result under this flow run's id (written atomically by the store)."""
    run_id = flow_run.get_id()
    if run_id is not None:
        store = open_store(result.store)
        store.write_bytes(result_key(run_id), result.model_dump_json().encode())


def read_recorded_result(store: ArtifactStore, flow_run_id: str) -> StageResult:
    """The result a stage flow run recorded (see `record_result`)."""
    return StageResult.model_validate(json.loads(store.read_bytes(result_key(flow_run_id))))


@flow(name="imagic-optimize", timeout_seconds=STAGE_TIMEOUT_S, persist_result=False)
def optimize_stage(request: OptimizeRequest) -> StageResult:
    """Stage A: optimize the target text's embedding so the frozen model reconstructs the image."""
    result = _optimize_task(request)
    record_result(result)
    return result


@flow(name="imagic-finetune", timeout_seconds=STAGE_TIMEOUT_S, persist_result=False)
def finetune_stage(request: FinetuneRequest) -> StageResult:
    """Stage B: fine-tune the model (full UNet or LoRA) so that e_opt reproduces the image."""
    result = _finetune_task(request)
    record_result(result)
    return result


@flow(name="imagic-generate", timeout_seconds=STAGE_TIMEOUT_S, persist_result=False)
def generate_stage(request: GenerateRequest) -> StageResult:
    """Stage C: sample every eta x seed from the fine-tuned model, and the grid."""
    result = _generate_task(request)
    record_result(result)
    return result


STAGE_FLOWS = {"optimize": optimize_stage, "finetune": finetune_stage, "generate": generate_stage}
