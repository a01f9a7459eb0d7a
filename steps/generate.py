"""Container step: stage generate (`python -m steps.generate --request FILE|- [--result FILE]`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from imagic.method import ProgressCallback
from imagic.stages import GenerateRequest as Request
from imagic.stages import StageResult as Result
from imagic.stages import run_generate
from steps.entrypoint import log_progress, step_main


def run(request: Request, progress: ProgressCallback = log_progress) -> Result:
    """Run the generate stage over the artifact store (a cache hit loads no model)."""
    return run_generate(request, progress)


def main(argv: Sequence[str] | None = None) -> int:
    """The step's command line (`python -m steps.generate` or `python -m steps generate`)."""
    return step_main("generate", Request, run, argv)


__all__ = ["Request", "Result", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
