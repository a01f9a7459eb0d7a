"""The server command lines of infra/compose.yaml, for starting the same servers natively.

infra/compose.yaml is the one place where `prefect server start` and `mlflow server` and
their flags are written. The integration tests take `services.<name>.command` from it and fill
in its `${VAR}` placeholders with native values (127.0.0.1, a free port, a sqlite database, a
moto bucket) instead of the Compose defaults, so a flag added to or changed in the stack is
what the tests run, and a flag the servers reject fails the tests.

Interpolation follows the Compose specification: `$$` is a literal `$`; `${VAR}` and `$VAR`
take VAR's value; `${VAR:-default}` the default when VAR is unset or empty, `${VAR-default}`
only when unset; `${VAR:?message}` and `${VAR?message}` refuse an unset (or empty) VAR. The
values come only from the mapping the caller passes, never from this process's environment,
so a developer's exported variables cannot change what the tests start.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "infra" / "compose.yaml"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# One placeholder: `$$`, `${NAME}`, `${NAME<op><arg>}` with op in :- - :? ?, or `$NAME`. The
# argument may not contain `}` (nested placeholders are not used in infra/compose.yaml).
_PLACEHOLDER = re.compile(
    rf"\$(?:(?P<escaped>\$)|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?])(?P<arg>[^}}]*))?\}}"
    rf"|(?P<bare>{_NAME}))"
)


class InterpolationError(ValueError):
    """A `${VAR:?}` without a value, a `${VAR}` nobody gave, or a `$` Compose would refuse."""


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Substitute the Compose placeholders of `text` from `values` (and their defaults)."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = values.get(name)
        # `:-` and `:?` treat an empty value as unset; `-` and `?` only an absent one.
        present = bool(value) if op in (":-", ":?") else value is not None
        if present:
            return str(value)
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise InterpolationError(f"{name}: {arg or 'required'} (in {text!r})")
        raise InterpolationError(
            f"{name} has no value and no default in {text!r}: pass it in the native values"
        )

    result, position = [], 0
    for match in _PLACEHOLDER.finditer(text):
        result.append(_check_no_stray_dollar(text[position : match.start()], text))
        result.append(replace(match))
        position = match.end()
    result.append(_check_no_stray_dollar(text[position:], text))
    return "".join(result)


def _check_no_stray_dollar(chunk: str, text: str) -> str:
    if "$" in chunk:
        raise InterpolationError(f"invalid interpolation format in {text!r}: use $$ for a '$'")
    return chunk


def placeholders(text: str) -> Iterator[str]:
    """The variable names referenced by `text` (escaped `$$` excluded)."""
    for match in _PLACEHOLDER.finditer(text):
        if not match["escaped"]:
            yield match["braced"] or match["bare"]


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    with path.open() as file:
        return yaml.safe_load(file)


def service_command(
    service: str,
    values: Mapping[str, str],
    *,
    bin_dir: Path | None = None,
    compose_file: Path = COMPOSE_FILE,
) -> list[str]:
    """`services.<service>.command` of the compose file, interpolated with `values`.

    The command must be a list (exec form): a shell string would need a shell here and
    quoting rules there. With `bin_dir`, the program is taken from that folder when it is
    there (the venv's `mlflow`, not whichever one is first on PATH).
    """
    services = load_compose(compose_file).get("services", {})
    if service not in services:
        raise KeyError(f"{compose_file}: no service {service!r} (has {sorted(services)})")
    command = services[service].get("command")
    if not isinstance(command, list) or not command:
        raise TypeError(
            f"{compose_file}: services.{service}.command must be a non-empty list, got {command!r}"
        )
    argv = [interpolate(str(arg), values) for arg in command]
    if bin_dir is not None:
        local = bin_dir / argv[0]
        argv[0] = str(local) if local.exists() else (shutil.which(argv[0]) or argv[0])
    return argv
