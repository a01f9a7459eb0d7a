"""Run a script of `benchmarks/` as its users do: its own process, from the repository root."""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python benchmarks/SCRIPT ARGS...`, output captured, stopped after 5 minutes."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def refusal(script: str, *args: str) -> str:
    """What `python benchmarks/SCRIPT ARGS...` prints when it refuses ARGS with a usage error
    (exit code 2), from the script's own `parse_args`, called in this process.

    Why not a process per case: a new process spends about 7 s of a 2-core CPU importing torch
    and diffusers before it reads one flag, and the refusals are all in `parse_args`, which
    runs before anything else the script does. Each script's whole run is still tested in its
    own process, as its users start it.
    """
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        module = importlib.import_module(Path(script).stem)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(stderr):
        module.parse_args(list(args))
    assert stopped.value.code == 2, stderr.getvalue()
    return stderr.getvalue()
