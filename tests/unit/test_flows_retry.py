"""Stage tasks retry transient storage and network failures only, never a user error."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from flows.stages import (
    GPU_TAG,
    RETRY_DELAYS_S,
    _finetune_task,
    _generate_task,
    _optimize_task,
    is_transient,
    result_key,
    retry_if_transient,
)
from imagic.errors import (
    ChecksumMismatchError,
    ImagicError,
    InvalidImageError,
    InvalidKeyError,
    InvalidParamsError,
    ModelLoadError,
    StageNotFoundError,
    StorageError,
    StorageUnavailableError,
)

TRANSIENT = [
    StorageUnavailableError("s3://b: the store is briefly overloaded; retry later"),
    ConnectionError("connection reset"),
    ConnectionRefusedError("refused"),
    TimeoutError("read timed out"),
    BrokenPipeError("broken pipe"),
]
PERMANENT = [
    StorageError("store = 'ftp://x': unsupported scheme"),
    InvalidKeyError("key = '..': contains a '..' segment"),
    ChecksumMismatchError("sha256 mismatch"),
    InvalidParamsError("optimize.steps = 0"),
    InvalidImageError("image 'a.png': file does not exist"),
    ModelLoadError("model = 'x': not found"),
    StageNotFoundError("optimize_key = 'k': run optimize first"),
    ImagicError("anything the user must fix"),
    ValueError("a bug"),
    RuntimeError("CUDA out of memory"),
    KeyError("a bug"),
    OSError("disk full"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda error: type(error).__name__)
def test_transient_errors_are_retried(error: BaseException):
    assert is_transient(error) is True


@pytest.mark.parametrize("error", PERMANENT, ids=lambda error: type(error).__name__)
def test_user_errors_and_bugs_are_not_retried(error: BaseException):
    assert is_transient(error) is False


def test_an_imagic_error_is_not_transient_even_when_it_is_also_a_connection_error():
    class WrappedError(InvalidParamsError, ConnectionError):
        pass

    assert is_transient(WrappedError("fix the request")) is False


def test_a_failed_state_returns_its_exception_without_raising():
    error = StorageUnavailableError("overloaded")
    assert Failed(data=error).result(raise_on_failure=False) is error


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda error: type(error).__name__)
def test_retry_condition_retries_failed_states_with_transient_errors(error: BaseException):
    assert retry_if_transient(None, None, Failed(data=error)) is True  # type: ignore[arg-type]


@pytest.mark.parametrize("error", PERMANENT, ids=lambda error: type(error).__name__)
def test_retry_condition_does_not_retry_other_failures(error: BaseException):
    assert retry_if_transient(None, None, Failed(data=error)) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "state",
    [Completed(data=5), Failed(message="crashed, no exception")],
    ids=["completed", "failed-without-data"],
)
def test_retry_condition_does_not_retry_states_without_a_transient_exception(state):
    assert retry_if_transient(None, None, state) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("stage_task", [_optimize_task, _finetune_task, _generate_task])
def test_stage_tasks_carry_the_gpu_tag_and_the_retry_condition(stage_task):
    assert stage_task.tags == {GPU_TAG}
    assert stage_task.retries == len(RETRY_DELAYS_S)
    assert stage_task.retry_delay_seconds == RETRY_DELAYS_S
    assert stage_task.retry_condition_fn is retry_if_transient


def test_result_key_is_under_the_flow_run_id():
    assert result_key("abc-123") == "prefect-flow-runs/abc-123/result.json"


@pytest.mark.parametrize("flow_run_id", ["..", "../other", "a/../b", "run id", "a\\b"])
def test_result_key_refuses_unsafe_flow_run_ids(flow_run_id: str):
    with pytest.raises(InvalidKeyError) as info:
        result_key(flow_run_id)
    assert repr(f"prefect-flow-runs/{flow_run_id}/result.json") in str(info.value)
