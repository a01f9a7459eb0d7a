"""The container contract shared by every step: a JSON request in, a JSON result out.

`python -m steps.<name> --request FILE|- [--result FILE]`. Exit codes: 0 success, 2 user error
(bad request, missing input, unreachable store...: one clear message on stderr, no
traceback), 1 anything else (a bug or an infrastructure failure: full traceback). Progress and
losses go to stderr as log lines, which container runtimes and Prefect workers collect.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from imagic.config import parse_params
from imagic.errors import ImagicError, InvalidParamsError
from imagic.method import StageProgress

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2
RequestT = TypeVar("RequestT", bound=BaseModel)
logger = logging.getLogger("imagic.steps")


def log_progress(event: StageProgress, every: int = 50) -> None:
    """Log every `every`-th step (and the last), with its loss: readable in container logs."""
    if event.step % every == 0 or event.step == event.total:
        loss = f" loss={event.loss:.5f}" if event.loss is not None else ""
        logger.info("%s step %d/%d%s", event.stage, event.step, event.total, loss)


def read_request(source: str, model: type[RequestT]) -> RequestT:
    """Parse the request file ('-' for stdin); every problem with it is a user error."""
    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise InvalidParamsError(
            f"request = '{source}': cannot read it ({exc.strerror}); pass an existing JSON "
            "file, or - to read the request from standard input."
        ) from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParamsError(
            f"request = '{source}': not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). Fix the JSON; `{model.__name__}` lists the fields."
        ) from exc
    return parse_params(model, data)


def write_result(result: BaseModel, destination: str | None) -> None:
    """Print the result, or write it atomically (a reader never sees half a result file)."""
    text = result.model_dump_json(indent=2)
    if destination is None:
        print(text)
        return
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.replace(temp, target)


def step_main(
    name: str,
    request_model: type[RequestT],
    run: Callable[[RequestT], BaseModel],
    argv: Sequence[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m steps.{name}", description=f"Run the {name} step on a JSON request."
    )
    parser.add_argument("--request", required=True, help="request JSON file, or - for stdin")
    parser.add_argument("--result", help="write the result JSON here (default: stdout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        result = run(read_request(args.request, request_model))
    except ImagicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc()
        return EXIT_FAILURE
    write_result(result, args.result)
    return EXIT_OK
