"""Container step: stage optimize (`python -m steps.optimize --request FILE|- [--result FILE]`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from imagic.method import ProgressCallback
from imagic.stages import OptimizeRequest as Request
from imagic.stages import StageResult as Result
from imagic.stages import run_optimize
from steps.entrypoint import log_progress, step_main


def run(request: Request, progress: ProgressCallback = log_progress) -> Result:
    """Run the optimize stage over the artifact store (a cache hit loads no model)."""
    return run_optimize(request, progress)


def main(argv: Sequence[str] | None = None) -> int:
    """The step's command line (`python -m steps.optimize` or `python -m steps optimize`)."""
    return step_main("optimize", Request, run, argv)


__all__ = ["Request", "Result", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
