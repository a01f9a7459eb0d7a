"""Run a script of `benchmarks/` as its users do: its own process, from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python benchmarks/SCRIPT ARGS...`, output captured, stopped after 5 minutes."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
