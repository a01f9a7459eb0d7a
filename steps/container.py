"""Container start checks of the step image: fail at once, with the fix, instead of hours later.

A step container is thrown away when it exits. Two mistakes in how it is started therefore
cost a whole GPU job and leave nothing behind:

- No `IMAGIC_STORE` or `MLFLOW_TRACKING_URI` for a step run by hand (a Prefect flow run gets
  both in its request and needs `PREFECT_API_URL` instead): the library falls back to
  `./imagic-data` and `sqlite:///mlflow.db`, which inside the container are written to its own
  filesystem and lost with it, so the next stage finds nothing ("run optimize first") and
  MLflow shows nothing.
- A model cache (`HF_HOME`, the image's volume) that cannot be written: the first model
  download fails after the container has started, with a long traceback from the hub client.

`check_container` finds both before any work starts and reports every problem at once. The
checks run only where `IMAGIC_CONTAINER=1` (set by docker/step-gpu.Dockerfile), so a developer
running `python -m steps ...` on a laptop keeps the local defaults.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

CONTAINER_ENV = "IMAGIC_CONTAINER"
DEFAULT_MODEL_CACHE = "~/.cache/huggingface"
MODEL_CACHE_VOLUME = "imagic-model-cache"

# What each required variable is for: printed with the names that are missing.
ENV_PURPOSE: dict[str, str] = {
    "IMAGIC_STORE": (
        "the artifact store, e.g. s3://bucket/prefix or a mounted folder; without it stage "
        "outputs go to ./imagic-data inside the container and are lost when it exits"
    ),
    "MLFLOW_TRACKING_URI": (
        "the MLflow tracking server, e.g. http://mlflow:5000; without it runs go to a "
        "sqlite:///mlflow.db inside the container and are lost when it exits"
    ),
    "PREFECT_API_URL": (
        "the Prefect server's API, e.g. http://prefect-server:4200/api; without it the flow "
        "run cannot report its state (a docker or kubernetes worker sets it)"
    ),
}
# A step run by hand reads its store and MLflow from the environment. A Prefect flow run gets
# both in its request (the edit flow resolves them), but must reach the Prefect API.
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "step": ("IMAGIC_STORE", "MLFLOW_TRACKING_URI"),
    "prefect": ("PREFECT_API_URL",),
}

_TRUE = {"1", "true", "yes", "on"}  # how huggingface_hub reads its boolean variables

WritableProbe = Callable[[Path], str | None]


def in_container(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the container checks apply: `IMAGIC_CONTAINER=1` (the step image sets it)."""
    environ = os.environ if environ is None else environ
    return environ.get(CONTAINER_ENV, "").strip() == "1"


def missing_env(environ: Mapping[str, str] | None = None, command: str = "step") -> list[str]:
    """The variables `command` needs that are unset or empty (empty is as bad as none)."""
    environ = os.environ if environ is None else environ
    return [name for name in REQUIRED_ENV[command] if not environ.get(name, "").strip()]


def model_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the hub client keeps models: `HF_HOME`, else ~/.cache/huggingface."""
    environ = os.environ if environ is None else environ
    raw = environ.get("HF_HOME", "").strip() or DEFAULT_MODEL_CACHE
    if raw.startswith("~") and environ.get("HOME"):
        raw = environ["HOME"] + raw[1:]
    return Path(raw).expanduser()


def hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    """`HF_HUB_OFFLINE` set true: models come from a pre-filled cache, nothing is written."""
    environ = os.environ if environ is None else environ
    return environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def probe_writable(path: Path) -> str | None:
    """None if files can be created in `path` (made if missing), else why not.

    It really creates (and removes) a file instead of asking `os.access`: a volume mounted
    read-only refuses writes even to root, which `os.access` may not report, and an
    ownership mismatch (a volume owned by another uid) shows up the same way.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".imagic-write-check-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def missing_env_message(missing: list[str]) -> str:
    lines = [
        "the step container is missing required environment variable"
        f"{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
    ]
    lines += [f"  {name}: {ENV_PURPOSE[name]}" for name in missing]
    lines.append(
        "Set them with `docker run -e NAME=VALUE` (or the work pool's job variables `env`, "
        "or the pod spec)."
    )
    return "\n".join(lines)


def unwritable_cache_message(path: Path, reason: str) -> str:
    return (
        f"model cache HF_HOME = '{path}' is not writable ({reason}). Mount the volume "
        f"read-write (e.g. -v {MODEL_CACHE_VOLUME}:{path}, writable by uid {os.getuid()}), "
        "or set HF_HUB_OFFLINE=1 with a pre-filled cache."
    )


def check_container(
    environ: Mapping[str, str] | None = None,
    is_writable: WritableProbe = probe_writable,
    command: str = "step",
) -> list[str]:
    """Every problem with how this container was started, as messages; [] when all is well.

    Call it only where `in_container()`; `is_writable` is injectable so tests can simulate a
    read-only volume even when they run as root.
    """
    environ = os.environ if environ is None else environ
    problems = []
    if missing := missing_env(environ, command):
        problems.append(missing_env_message(missing))
    if not hub_offline(environ):
        cache = model_cache_dir(environ)
        if (reason := is_writable(cache)) is not None:
            problems.append(unwritable_cache_message(cache, reason))
    return problems
