"""Container step: stage finetune (`python -m steps.finetune --request FILE|- [--result FILE]`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from imagic.method import ProgressCallback
from imagic.stages import FinetuneRequest as Request
from imagic.stages import StageResult as Result
from imagic.stages import run_finetune
from steps.entrypoint import log_progress, step_main


def run(request: Request, progress: ProgressCallback = log_progress) -> Result:
    """Run the finetune stage over the artifact store (a cache hit loads no model)."""
    return run_finetune(request, progress)


def main(argv: Sequence[str] | None = None) -> int:
    """The step's command line (`python -m steps.finetune` or `python -m steps finetune`)."""
    return step_main("finetune", Request, run, argv)


__all__ = ["Request", "Result", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
