"""`python -m steps <step>`: dispatch, bad step names, and the container start checks."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import steps.__main__ as entry
from steps import container

ROOT = Path(__file__).resolve().parents[2]
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CHECKED_ENV = ("IMAGIC_CONTAINER", "IMAGIC_STORE", "MLFLOW_TRACKING_URI", "HF_HOME")


def run_steps(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m steps ARGS` with the checked variables unset unless given in `env`."""
    environ = {k: v for k, v in os.environ.items() if k not in CHECKED_ENV}
    environ.pop("HF_HUB_OFFLINE", None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "steps", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def configured(tmp_path: Path) -> dict[str, str]:
    """A container environment with nothing wrong in it."""
    return {
        "IMAGIC_CONTAINER": "1",
        "IMAGIC_STORE": str(tmp_path / "store"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "HF_HOME": str(tmp_path / "hf-cache"),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # never contacted by these commands
    }


# ---- the command line --------------------------------------------------------------------


@pytest.mark.parametrize("in_container", [False, True], ids=["local", "container"])
def test_unknown_step_is_one_line_naming_it_and_the_choices(in_container: bool) -> None:
    env = {"IMAGIC_CONTAINER": "1"} if in_container else {}
    result = run_steps("optimise", "--request", "-", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'optimise'" in lines[0]
    for name in ("optimize", "finetune", "generate", "prefect"):
        assert name in lines[0]
    assert "Traceback" not in result.stderr


def test_help_prints_usage_and_exits_0() -> None:
    result = run_steps("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m steps <step>")
    for name in ("optimize", "finetune", "generate", "prefect", "IMAGIC_STORE", "HF_HUB_OFFLINE"):
        assert name in result.stdout


def test_no_arguments_is_a_usage_error() -> None:
    result = run_steps()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m steps <step>")


def test_a_step_help_dispatches_to_that_step_even_in_an_unconfigured_container() -> None:
    """The image's CMD-style `optimize --help` reaches the step's own parser; help needs no
    store, so the start checks do not stand in its way."""
    result = run_steps("optimize", "--help", IMAGIC_CONTAINER="1")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m steps.optimize" in result.stdout
    assert "--request" in result.stdout


@pytest.mark.parametrize("step", ["optimize", "finetune", "generate"])
def test_dispatch_passes_the_arguments_to_the_step(
    step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert entry.main([step, "--request", str(missing)], environ={}) == 2
    err = capsys.readouterr().err
    assert f"request = '{missing}'" in err
    assert "cannot read it" in err


def test_prefect_passes_through_to_the_prefect_cli(configured: dict[str, str]) -> None:
    import prefect

    for env in ({}, configured):
        result = run_steps("prefect", "--version", **env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == prefect.__version__


def test_prefect_runs_only_after_the_checks(tmp_path: Path) -> None:
    """A flow run gets its store and MLflow in its request, but must reach the Prefect API."""
    result = run_steps(
        "prefect", "flow-run", "execute",
        IMAGIC_CONTAINER="1", HF_HOME=str(tmp_path / "hf"), PREFECT_API_URL="",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].endswith("variable: PREFECT_API_URL")
    assert "IMAGIC_STORE" not in result.stderr


# ---- container start checks, end to end ------------------------------------------------------


def test_missing_env_vars_are_listed_together_with_what_each_is_for(tmp_path: Path) -> None:
    result = run_steps(
        "generate", "--request", "-", IMAGIC_CONTAINER="1", HF_HOME=str(tmp_path / "hf")
    )
    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("error: the step container is missing required environment variables:")
    assert "IMAGIC_STORE, MLFLOW_TRACKING_URI" in err.splitlines()[0]
    assert "artifact store" in err and "MLflow tracking server" in err
    assert "docker run -e" in err
    assert "Traceback" not in err


def test_an_empty_variable_counts_as_missing(configured: dict[str, str]) -> None:
    result = run_steps("finetune", "--request", "-", **{**configured, "IMAGIC_STORE": " "})
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.endswith("variable: IMAGIC_STORE")
    assert "MLFLOW_TRACKING_URI:" not in result.stderr


def test_checks_are_off_outside_a_container(tmp_path: Path) -> None:
    """Without IMAGIC_CONTAINER=1 the local defaults stand: nothing is required."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_steps("prefect", "version", HF_HOME=str(blocker / "cache"))
    assert result.returncode == 0, result.stderr
    assert "missing required" not in result.stderr
    assert "not writable" not in result.stderr


def test_a_cache_that_cannot_be_created_is_refused_with_the_fix(
    configured: dict[str, str], tmp_path: Path
) -> None:
    """Works as root too: nobody can create a folder under a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache volume should be")
    cache = blocker / "huggingface"
    result = run_steps("optimize", "--request", "-", **{**configured, "HF_HOME": str(cache)})
    assert result.returncode == 2
    err = result.stderr
    assert f"model cache HF_HOME = '{cache}' is not writable" in err
    assert "read-write" in err and "HF_HUB_OFFLINE=1" in err
    assert "missing required" not in err  # the variables were fine: only the real problem


def test_both_problems_are_reported_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = run_steps("optimize", IMAGIC_CONTAINER="1", HF_HOME=str(blocker / "hf"))
    assert result.returncode == 2
    assert "missing required environment variables" in result.stderr
    assert "is not writable" in result.stderr


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root ignores folder permissions")
def test_a_read_only_cache_folder_is_refused(configured: dict[str, str], tmp_path: Path) -> None:
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        result = run_steps("optimize", "--request", "-", **{**configured, "HF_HOME": str(cache)})
    finally:
        cache.chmod(0o755)
    assert result.returncode == 2
    assert f"model cache HF_HOME = '{cache}' is not writable (Permission denied)" in result.stderr


def _read_only_mount_prefix(folder: Path) -> list[str] | None:
    """A command prefix that runs its command with `folder` bind-mounted read-only (in a
    private mount namespace, so nothing outside sees it), or None where that is not allowed."""
    if shutil.which("unshare") is None:
        return None
    quoted = shlex.quote(str(folder))
    setup = f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted}"
    prefix = ["unshare", "--map-root-user", "--mount", "sh", "-c", f'{setup} && exec "$@"', "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    return prefix if probe.returncode == 0 else None


def test_a_read_only_volume_is_refused(configured: dict[str, str], tmp_path: Path) -> None:
    """A real read-only mount (like `-v imagic-model-cache:...:ro`): refused even for root."""
    cache = tmp_path / "mounted-cache"
    cache.mkdir()
    prefix = _read_only_mount_prefix(cache)
    if prefix is None:
        pytest.skip("cannot make a read-only bind mount here (unshare/mount not permitted)")
    environ = {k: v for k, v in os.environ.items() if k not in CHECKED_ENV}
    environ.update({**configured, "HF_HOME": str(cache)})
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "steps", "optimize", "--request", "-"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert f"model cache HF_HOME = '{cache}' is not writable (Read-only file system)" in (
        result.stderr
    )
    assert list(cache.iterdir()) == []


def test_offline_hub_needs_no_writable_cache(configured: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env = {**configured, "HF_HOME": str(blocker / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_steps("prefect", "version", **env)
    assert result.returncode == 0, result.stderr
    assert "not writable" not in result.stderr


# ---- the check functions ---------------------------------------------------------------------


def test_check_container_with_a_simulated_read_only_volume() -> None:
    """Works as root too: the write probe itself is what is simulated."""
    probed: list[Path] = []

    def read_only(path: Path) -> str:
        probed.append(path)
        return "Read-only file system"

    environ = {
        "IMAGIC_STORE": "s3://bucket/store",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "HF_HOME": "/home/imagic/.cache/huggingface",
    }
    problems = container.check_container(environ, is_writable=read_only)
    assert probed == [Path("/home/imagic/.cache/huggingface")]
    assert len(problems) == 1
    assert (
        "'/home/imagic/.cache/huggingface' is not writable (Read-only file system)" in (problems[0])
    )
    assert "-v imagic-model-cache:/home/imagic/.cache/huggingface" in problems[0]
    assert container.check_container({**environ, "HF_HUB_OFFLINE": "true"}, read_only) == []
    assert len(probed) == 1  # offline: not even probed


def test_check_container_all_well() -> None:
    environ = {"IMAGIC_STORE": "s3://b/p", "MLFLOW_TRACKING_URI": "http://m:5000"}
    assert container.check_container(environ, is_writable=lambda path: None) == []


def test_missing_env_in_declared_order() -> None:
    assert container.missing_env({}) == ["IMAGIC_STORE", "MLFLOW_TRACKING_URI"]
    assert container.missing_env({}, "prefect") == ["PREFECT_API_URL"]
    assert container.missing_env({"IMAGIC_STORE": "x", "MLFLOW_TRACKING_URI": ""}) == [
        "MLFLOW_TRACKING_URI"
    ]


def test_model_cache_dir_defaults_to_the_home_cache() -> None:
    assert container.model_cache_dir({"HOME": "/home/imagic"}) == Path(
        "/home/imagic/.cache/huggingface"
    )
    assert container.model_cache_dir({"HF_HOME": "/models/hf"}) == Path("/models/hf")


@pytest.mark.parametrize("value, expected", [("1", True), ("ON", True), ("0", False), ("", False)])
def test_hub_offline(value: str, expected: bool) -> None:
    assert container.hub_offline({"HF_HUB_OFFLINE": value}) is expected


def test_in_container_only_for_1() -> None:
    assert container.in_container({"IMAGIC_CONTAINER": "1"})
    assert not container.in_container({"IMAGIC_CONTAINER": "0"})
    assert not container.in_container({})


def test_probe_writable_really_writes_and_leaves_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "new" / "cache"
    assert container.probe_writable(cache) is None
    assert cache.is_dir() and list(cache.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert container.probe_writable(blocker / "cache") == "Not a directory"
