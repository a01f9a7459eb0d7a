"""`python -m steps <step> [args...]`: the step image's entry point, the step chosen by argument.

One image serves every stage, so the image's ENTRYPOINT is `python -m steps` and the step is its
first argument (`docker run IMAGE optimize --request - < a.json`). The stages are the existing
`python -m steps.<name>` command lines, called as they are (`steps.<name>.main`).

`prefect` runs the Prefect CLI in the same process slot (exec, so that it is PID 1 and gets the
container's signals): a Prefect docker worker starts a flow run by giving the container the
command `prefect flow-run execute`, which lands here as `python -m steps prefect flow-run
execute`, so the stage flows of prefect.yaml run in this image too.

Before a step or Prefect starts, in a container (`IMAGIC_CONTAINER=1`), `steps.container` checks
the environment and the model cache; any problem: one message, exit 2, nothing started. Asking
for help (`-h`, `--help`, `prefect --version`) skips the checks.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence

from steps.container import REQUIRED_ENV, check_container, in_container

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2
STEPS = ("optimize", "finetune", "generate")
COMMANDS = (*STEPS, "prefect")
HELP_FLAGS = ("-h", "--help")

USAGE = f"""\
usage: python -m steps <step> [args...]

steps:
  optimize   stage A: optimize the target text's embedding   (--request FILE|- [--result FILE])
  finetune   stage B: fine-tune the UNet with e_opt frozen   (--request FILE|- [--result FILE])
  generate   stage C: sample the eta x seed sweep            (--request FILE|- [--result FILE])
  prefect    the Prefect CLI, e.g. `prefect flow-run execute` (how a docker worker runs a flow)

`python -m steps <step> --help` describes a step's arguments. With IMAGIC_CONTAINER=1 (the step
image) a step needs {", ".join(REQUIRED_ENV["step"])}, `prefect` needs
{", ".join(REQUIRED_ENV["prefect"])}, and the model cache (HF_HOME) must be writable unless
HF_HUB_OFFLINE=1. Exit codes: 0 success, 2 user error, 1 anything else."""


def _asks_for_help(args: Sequence[str]) -> bool:
    """Help or a version needs no store: answer it even in a half-configured container."""
    return any(arg in HELP_FLAGS for arg in args) or list(args) == ["--version"]


def _exec_prefect(args: Sequence[str]) -> int:
    """Replace this process by the Prefect CLI of this interpreter (returns only on failure)."""
    command = [sys.executable, "-m", "prefect", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, command)
    except OSError as exc:
        print(f"error: cannot start the Prefect CLI ({exc.strerror})", file=sys.stderr)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(USAGE, file=sys.stderr)
        return EXIT_USER_ERROR
    if args[0] in HELP_FLAGS:
        print(USAGE)
        return EXIT_OK
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"error: step = {command!r} is not a step; choose one of {', '.join(COMMANDS)} "
            "(python -m steps --help lists them).",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    if in_container(environ) and not _asks_for_help(rest):
        problems = check_container(environ, command="prefect" if command == "prefect" else "step")
        if problems:
            print("error: " + "\n\nerror: ".join(problems), file=sys.stderr)
            return EXIT_USER_ERROR
    if command == "prefect":
        return _exec_prefect(rest)
    module = importlib.import_module(f"steps.{command}")  # torch and the stage code: only now
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
