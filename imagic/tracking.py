"""MLflow tracking of an edit: one parent run per edit, one nested run per stage.

Every call goes through `mlflow.MlflowClient` with explicit run ids, never the fluent API and
its process-global "active run": the optimize, finetune and generate steps may run
concurrently in one process (Prefect), each with its own runs.

Tracking must never cost an edit. When the server cannot be reached, `open_tracker` warns once
and returns a `NullTracker` (or raises `TrackingError` when `required`); when MLflow fails in
the middle of a run, the tracker warns once and becomes a no-op for the rest of the run (or
raises `TrackingError` when `required`). No credential reaches MLflow: every param and tag
passes through `scrub`.

Environment variables read:

- `MLFLOW_TRACKING_URI`: the server, when `TrackingOptions.tracking_uri` is not set (MLflow's
  own resolution; with neither, MLflow's local default `sqlite:///mlflow.db` in the current
  folder, which needs no server).
- `MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`,
  `MLFLOW_HTTP_REQUEST_TIMEOUT`: MLflow reads these per request and has no per-client
  setting, so for an http(s) server `open_tracker` sets process-wide defaults (2 retries,
  backoff factor 1, 10 s) unless they are already set: a dead server costs seconds, not
  MLflow's default of 7 retries with exponential backoff (minutes). Artifact uploads get a
  longer timeout (`ARTIFACT_UPLOAD_TIMEOUT_S`) while they run, because a proxying server only
  answers once it has copied the whole file to the artifact store.
- `IMAGIC_GIT_COMMIT`, `IMAGIC_CONTAINER_IMAGE`: see `standard_tags`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imagic.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow's limits (mlflow/utils/validation.py, 3.x).
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
TRUNCATION_MARKER = "...[truncated]"

HEALTH_TIMEOUT_S = 3.0
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
ARTIFACT_UPLOAD_TIMEOUT_S = 600
PARENT_RUN_TAG = "mlflow.parentRunId"
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "peft", "mlflow")

T = TypeVar("T")


class TrackingOptions(BaseModel):
    """Where and how an edit is tracked in MLflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Log runs to MLflow; false touches nothing of MLflow.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (http(s)://server, sqlite:///file.db, ...); default "
        "MLFLOW_TRACKING_URI, else MLflow's local default (sqlite:///mlflow.db, no server).",
    )
    experiment: str = Field(
        "imagic", min_length=1, description="MLflow experiment name (created when missing)."
    )
    required: bool = Field(
        False,
        description="Stop with an error when MLflow cannot be used; false warns once and the "
        "edit continues untracked.",
    )
    log_weights: Literal["copy", "reference"] = Field(
        "copy",
        description="Fine-tuned weights: upload a copy as run artifacts, or only log their "
        "artifact-store URI.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _blank_is_default(cls, uri: str | None) -> str | None:
        if uri is None or not uri.strip():
            return None
        return uri.strip()


# --- params, tags and credentials ---------------------------------------------------------


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, default=str)
    return str(value)


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys with string values, fit for MLflow params.

    Lists are JSON (`generate.etas` -> `[0.6, 0.7, 0.8]`), other values `str()`; a value longer
    than MLflow's limit (6000 characters) is cut and ends with `TRUNCATION_MARKER`.
    """
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
        else:
            flat[name] = _truncate(_stringify(value), MAX_PARAM_VALUE_LENGTH)
    return flat


_SECRET_KEY_WORDS = (
    "secret",
    "password",
    "passwd",
    "token",
    "credential",
    "accesskey",
    "apikey",
    "auth",
)
_SECRET_QUERY_WORDS = (*_SECRET_KEY_WORDS, "signature")
_SECRET_QUERY_NAMES = ("sig", "key")  # Azure SAS `sig=`, Google API `key=`
_URI_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s?#@]*(?:@[^/\s?#@]*)*@")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")
_REDACTED = "***"


def _normalized(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _looks_secret(key: str) -> bool:
    normalized = _normalized(key)
    return any(word in normalized for word in _SECRET_KEY_WORDS)


def _secret_query_name(name: str) -> bool:
    normalized = _normalized(name)
    return normalized in _SECRET_QUERY_NAMES or any(w in normalized for w in _SECRET_QUERY_WORDS)


def scrub_text(text: str) -> str:
    """`text` with the `user:password@` part of URIs dropped and secret query values as ***."""
    text = _URI_USERINFO.sub(r"\g<scheme>", text)

    def redact(match: re.Match[str]) -> str:
        if not _secret_query_name(match["name"]) or not match["value"]:
            return match[0]
        return f"{match['lead']}{match['name']}={_REDACTED}"

    return _QUERY_PARAM.sub(redact, text)


def scrub(values: Mapping[str, str]) -> dict[str, str]:
    """The same mapping with no credentials: applied to every param and tag the Tracker logs.

    A key that looks secret (secret, password, passwd, token, credential, access_key, api_key,
    auth; any case or separator) gets the value "***" (an empty or "None" value stays, so
    the run shows that none was set). Other values lose the `user:password@` of URIs and the
    values of secret query parameters (`X-Amz-Signature`, `X-Amz-Credential`, `token`, `sig`,
    ...). Plain text and URIs without credentials are unchanged.
    """
    clean: dict[str, str] = {}
    for key, value in values.items():
        text = str(value)
        if _looks_secret(key) and text not in ("", "None", "null"):
            clean[key] = _REDACTED
        else:
            clean[key] = scrub_text(text)
    return clean


@functools.cache
def _git_commit_of_checkout() -> str | None:
    package_dir = Path(__file__).resolve().parent
    if {"site-packages", "dist-packages"} & set(package_dir.parts):
        return None  # an installed copy: a repository above it is not where it came from
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=package_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def standard_tags() -> dict[str, str]:
    """Tags that make a run reproducible: code commit, package versions, container image.

    `imagic.git_commit`: env `IMAGIC_GIT_COMMIT`, else `git rev-parse HEAD` when the imagic
    package is a git checkout, else "unknown". `imagic.version.<pkg>` for imagic, torch,
    diffusers, transformers, peft, mlflow and python. `imagic.container_image` from env
    `IMAGIC_CONTAINER_IMAGE` when set. Never raises.
    """
    import imagic

    commit = os.environ.get("IMAGIC_GIT_COMMIT") or _git_commit_of_checkout() or "unknown"
    tags = {
        "imagic.git_commit": commit,
        "imagic.version.imagic": getattr(imagic, "__version__", "unknown"),
        **{f"imagic.version.{name}": _version(name) for name in VERSIONED_PACKAGES},
        "imagic.version.python": platform.python_version(),
    }
    if image := os.environ.get("IMAGIC_CONTAINER_IMAGE"):
        tags["imagic.container_image"] = image
    return tags


def _mlflow_key(key: str) -> str:
    """A key MLflow accepts: alphanumerics, `_ - . / : space`, at most 250 characters."""
    return re.sub(r"[^\w.\-/: ]", "_", str(key))[:MAX_KEY_LENGTH] or "_"


def _clean(values: Mapping[str, Any], limit: int) -> dict[str, str]:
    scrubbed = scrub({_mlflow_key(k): _stringify(v) for k, v in values.items()})
    return {key: _truncate(value, limit) for key, value in scrubbed.items()}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- HTTP servers -------------------------------------------------------------------------


def _is_http(uri: str | None) -> bool:
    return bool(uri) and uri.split("://", 1)[0].lower() in ("http", "https")


def _display(uri: str | None) -> str:
    return scrub_text(uri) if uri else "MLflow's default tracking URI"


def _probe(uri: str) -> str | None:
    """Why `<uri>/health` is unusable (None when the server answers), within a few seconds."""
    url = scrub_text(uri).rstrip("/") + "/health"  # /health needs no credentials
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as error:  # it answered: reachable unless a gateway error
        return f"{url} answered HTTP {error.code}" if error.code >= 500 else None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{url} is unreachable ({reason})"


_env_lock = threading.Lock()
_owned_timeout: str | None = None  # the timeout value open_tracker set, when it set one
_uploads_running = 0


def _bound_http_retries() -> None:
    """Process-wide defaults for MLflow's HTTP retries (MLflow has no per-client setting)."""
    global _owned_timeout
    with _env_lock:
        for name, value in HTTP_DEFAULTS.items():
            if name not in os.environ:
                os.environ[name] = value
                if name == "MLFLOW_HTTP_REQUEST_TIMEOUT":
                    _owned_timeout = value


@contextmanager
def _long_upload_timeout() -> Iterator[None]:
    """Raise the HTTP timeout we set while an artifact uploads (refcounted across threads).

    A proxying server answers an upload only after copying the file to its artifact store,
    which for full UNet weights takes longer than the short timeout of the other calls.
    A timeout the user set themselves is left alone.
    """
    global _uploads_running
    name = "MLFLOW_HTTP_REQUEST_TIMEOUT"
    with _env_lock:
        owned = _owned_timeout is not None and os.environ.get(name) == _owned_timeout
        if owned or _uploads_running:
            if _uploads_running == 0:
                os.environ[name] = str(ARTIFACT_UPLOAD_TIMEOUT_S)
            _uploads_running += 1
            counted = True
        else:
            counted = False
    try:
        yield
    finally:
        if counted:
            with _env_lock:
                _uploads_running -= 1
                if _uploads_running == 0 and _owned_timeout is not None:
                    os.environ[name] = _owned_timeout


# --- trackers -----------------------------------------------------------------------------


class StageRun:
    """One MLflow run (a stage, or the edit) to log metrics, artifacts and tags to."""

    def __init__(self, tracker: Tracker, run_id: str | None) -> None:
        self._tracker = tracker
        self.run_id = run_id

    def log_metric_series(self, name: str, values: Sequence[float]) -> None:
        """`values[i]` at step i + 1, in batches of MLflow's limit (1000 metrics)."""
        self._tracker._log_series(self.run_id, name, values)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Single values (step 0), one batch."""
        self._tracker._log_metrics(self.run_id, metrics)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's whole contents, under `artifact_path` of the run."""
        self._tracker._log_artifact(self.run_id, Path(local_path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) tags; credentials are scrubbed."""
        self._tracker._set_tags(self.run_id, tags)


class Tracker:
    """Logs to one MLflow experiment through an `MlflowClient`; see `open_tracker`."""

    def __init__(
        self,
        client: MlflowClient | None,
        *,
        tracking_uri: str | None,
        experiment_id: str | None,
        required: bool = False,
    ) -> None:
        self._client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.required = required
        self._broken = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False for a NullTracker, and once MLflow failed and tracking was dropped."""
        return self._client is not None and not self._broken

    # public API

    def start_edit(
        self, *, name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str | None:
        """Create the parent run of an edit; its id (None when not tracking)."""
        return self._create_run(name, parent_run_id=None, params=params, tags=tags)

    def end_run(self, run_id: str | None, *, failed: bool = False) -> None:
        """Mark a run FINISHED (or FAILED)."""
        self._terminate(run_id, "FAILED" if failed else "FINISHED")

    @contextmanager
    def stage_run(
        self,
        stage: str,
        *,
        parent_run_id: str | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> Iterator[StageRun]:
        """A run named `stage`, nested under `parent_run_id` (top-level when None).

        FINISHED when the block completes, FAILED when it raises (KILLED on Ctrl-C); the
        exception propagates unchanged.
        """
        run_id = self._create_run(
            stage,
            parent_run_id=parent_run_id,
            params=params,
            tags={"imagic.stage": stage, **tags},
        )
        run = StageRun(self, run_id)
        try:
            yield run
        except BaseException as error:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            with contextlib.suppress(TrackingError):  # the block's own error matters more
                self._terminate(run_id, status)
            raise
        self._terminate(run_id, "FINISHED")

    def run_url(self, run_id: str | None) -> str | None:
        """The run's page in the MLflow UI, for an http(s) server."""
        if run_id is None or self.experiment_id is None or not _is_http(self.tracking_uri):
            return None
        base = scrub_text(self.tracking_uri).rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def artifact_url(self, run_id: str | None, path: str) -> str | None:
        """A direct download URL of one of the run's artifacts, served by an http(s) server."""
        if run_id is None or not _is_http(self.tracking_uri):
            return None
        base = scrub_text(self.tracking_uri).rstrip("/")
        return f"{base}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"

    # MLflow calls, each guarded by _call

    def _call(self, action: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if not self.enabled:
            return None
        try:
            return function(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as error:
            self._fail(action, error)
            return None

    def _fail(self, action: str, error: BaseException | str) -> None:
        uri = _display(self.tracking_uri)
        detail = _truncate(scrub_text(" ".join(str(error).split())), 500)
        if self.required:
            raise TrackingError(
                f"MLflow tracking at {uri} failed while {action}: {detail}. Tracking is "
                "required (tracking.required = true), so the edit stops. Check that the "
                "server is up, or set tracking.required = false to continue untracked."
            ) from (error if isinstance(error, BaseException) else None)
        with self._lock:
            if self._broken:
                return
            self._broken = True
        warnings.warn(
            f"MLflow tracking at {uri} failed while {action}: {detail}. The edit continues "
            "untracked (nothing more is logged to MLflow for this run). Set "
            "tracking.required = true to stop instead, or tracking.enabled = false to turn "
            "tracking off.",
            UserWarning,
            stacklevel=4,
        )

    def _create_run(
        self,
        name: str,
        *,
        parent_run_id: str | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> str | None:
        if not self.enabled:
            return None
        initial = _context_tags()
        if parent_run_id is not None:
            initial[PARENT_RUN_TAG] = parent_run_id
        run = self._call(
            f"creating run {name!r}",
            self._client.create_run,
            self.experiment_id,
            run_name=name,
            tags=_clean(initial, MAX_TAG_VALUE_LENGTH),
        )
        if run is None:
            return None
        run_id = run.info.run_id
        all_tags = {**standard_tags(), **tags}
        self._call(
            f"logging params and tags of run {name!r}",
            self._log_batch,
            run_id,
            params=_clean(params, MAX_PARAM_VALUE_LENGTH),
            tags=_clean(all_tags, MAX_TAG_VALUE_LENGTH),
        )
        return run_id

    def _log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[Any] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Param, RunTag

        param_list = [Param(k, v) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
        for chunk in _chunks(list(metrics), MAX_METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=chunk)
        param_chunks = list(_chunks(param_list, MAX_PARAMS_TAGS_PER_BATCH))
        tag_chunks = list(_chunks(tag_list, MAX_PARAMS_TAGS_PER_BATCH))
        for index in range(max(len(param_chunks), len(tag_chunks))):
            self._client.log_batch(
                run_id,
                params=param_chunks[index] if index < len(param_chunks) else (),
                tags=tag_chunks[index] if index < len(tag_chunks) else (),
            )

    def _terminate(self, run_id: str | None, status: str) -> None:
        if run_id is not None:
            self._call(
                f"ending run {run_id} as {status}", self._client.set_terminated, run_id, status
            )

    def _log_series(self, run_id: str | None, name: str, values: Sequence[float]) -> None:
        if run_id is None or not self.enabled or len(values) == 0:
            return
        from mlflow.entities import Metric

        key = _mlflow_key(name)
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(v), now, step) for step, v in enumerate(values, start=1)]
        self._call(f"logging metric {key!r}", self._log_batch, run_id, metrics=metrics)

    def _log_metrics(self, run_id: str | None, values: Mapping[str, float]) -> None:
        if run_id is None or not self.enabled or not values:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), float(v), now, 0) for k, v in values.items()]
        self._call("logging metrics", self._log_batch, run_id, metrics=metrics)

    def _set_tags(self, run_id: str | None, tags: Mapping[str, str]) -> None:
        if run_id is None or not self.enabled or not tags:
            return
        clean = _clean(tags, MAX_TAG_VALUE_LENGTH)
        self._call("setting tags", self._log_batch, run_id, tags=clean)

    def _log_artifact(self, run_id: str | None, path: Path, artifact_path: str | None) -> None:
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        if run_id is None or not self.enabled:
            return
        action = f"uploading artifact {path.name!r}"
        if _is_http(self.tracking_uri) and (problem := _probe(self.tracking_uri)):
            self._fail(action, problem)  # a dead server must not cost an upload timeout
            return
        with _long_upload_timeout():
            if path.is_dir():
                self._call(action, self._client.log_artifacts, run_id, str(path), artifact_path)
            else:
                self._call(action, self._client.log_artifact, run_id, str(path), artifact_path)


class NullTracker(Tracker):
    """Tracks nothing and touches nothing of MLflow: tracking disabled or unavailable."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        super().__init__(None, tracking_uri=tracking_uri, experiment_id=None)


def _context_tags() -> dict[str, str]:
    """What MLflow's fluent API would add (user, source, its git info); never raises."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {k: str(v) for k, v in resolve_tags().items()}
    except Exception:
        return {}


def _get_or_create_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except Exception:  # created concurrently by another step: use that one
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"experiment {name!r} is deleted: restore it (`mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}`) or set tracking.experiment to "
            "another name"
        )
    return experiment.experiment_id


def _unavailable(options: TrackingOptions, uri: str | None, problem: object) -> NullTracker:
    shown = _display(uri)
    detail = _truncate(scrub_text(" ".join(str(problem).split())), 500)
    if options.required:
        raise TrackingError(
            f"MLflow tracking server {shown} cannot be used: {detail}. Tracking is required "
            "(tracking.required = true), so nothing was run. Start the server or fix "
            "tracking.tracking_uri / MLFLOW_TRACKING_URI, or set tracking.required = false "
            "to run untracked."
        )
    warnings.warn(
        f"MLflow tracking server {shown} cannot be used: {detail}. The edit continues "
        "untracked. Set tracking.required = true to stop instead, or tracking.enabled = false "
        "to turn tracking off.",
        UserWarning,
        stacklevel=3,
    )
    return NullTracker(uri)


def open_tracker(options: TrackingOptions) -> Tracker:
    """A Tracker for `options`: a NullTracker when disabled or (not required) unavailable.

    For an http(s) server, `<uri>/health` is probed first (3 s, no retries) and MLflow's HTTP
    retries are bounded (see the module docstring); then the experiment is fetched or created.
    Raises TrackingError, before any work, when `required` and MLflow cannot be used.
    """
    if not options.enabled:
        return NullTracker(options.tracking_uri)
    try:
        import mlflow
    except ImportError as error:
        problem = f"the mlflow package is not installed ({error}); `pip install mlflow`"
        return _unavailable(options, options.tracking_uri, problem)

    uri = options.tracking_uri or mlflow.get_tracking_uri()
    if _is_http(uri):
        _bound_http_retries()
        if problem := _probe(uri):
            return _unavailable(options, uri, problem)
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment_id = _get_or_create_experiment(client, options.experiment)
    except Exception as error:
        return _unavailable(options, uri, error)
    return Tracker(client, tracking_uri=uri, experiment_id=experiment_id, required=options.required)
