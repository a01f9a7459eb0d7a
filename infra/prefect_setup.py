"""The imagic-gpu docker work pool's base job template, for infra/setup.sh.

    python infra/prefect_setup.py docker-template --out FILE --network NET \\
        --env IMAGIC_STORE --env MLFLOW_TRACKING_URI ... --secret AWS_SECRET_ACCESS_KEY ...

Starts from the docker worker's own default template (prefect-docker's, where it is installed,
else the copy in Prefect's worker registry) and sets what a stage container needs on the
Compose stack:

- `networks`: the stack's network, so that it reaches prefect-server, mlflow and minio;
- `env`: each `--env NAME` with its value from this process's environment, and each
  `--secret NAME` as a reference `{{ prefect.blocks.secret.imagic-<name> }}` to a Secret
  block that this command saves with the value: the worker resolves it when it starts the
  container, so the key is never shown in the work pool's page or the deployment's;
- `auto_remove`: stage containers are removed when they exit (their logs are in Prefect);
- `container_create_kwargs`: kept, or added where the registry copy lacks it: prefect.yaml asks
  for the GPU through it (`device_requests`), and a template without it drops that silently.

Needs PREFECT_API_URL (the server that stores the Secret blocks).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GPU_KWARGS = "container_create_kwargs"
GPU_KWARGS_SCHEMA = {
    "title": "Container Configuration",
    "description": (
        "Configuration for containers created by workers (docker-py's containers.create "
        "arguments), e.g. device_requests for GPUs."
    ),
    "type": "object",
}


def secret_block_name(env_name: str) -> str:
    """The Secret block that holds an environment variable: AWS_SECRET_ACCESS_KEY ->
    imagic-aws-secret-access-key (block names are lowercase, digits and dashes)."""
    return "imagic-" + env_name.lower().replace("_", "-")


def secret_reference(env_name: str) -> str:
    return "{{ prefect.blocks.secret." + secret_block_name(env_name) + " }}"


def docker_job_template(
    default: Mapping[str, Any],
    *,
    network: str,
    env: Mapping[str, str],
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """`default` (a docker base job template) with the stack's network, environment and GPU
    passthrough; `secrets` are environment variables referenced from Secret blocks."""
    template = copy.deepcopy(dict(default))
    configuration = template["job_configuration"]
    properties = template["variables"]["properties"]
    missing = [key for key in ("networks", "env", "auto_remove") if key not in properties]
    if missing:
        raise ValueError(f"not a docker base job template: no variables {missing}")
    configuration.setdefault(GPU_KWARGS, "{{ " + GPU_KWARGS + " }}")
    properties.setdefault(GPU_KWARGS, dict(GPU_KWARGS_SCHEMA))
    properties["networks"]["default"] = [network]
    properties["auto_remove"]["default"] = True
    properties["env"]["default"] = {
        **dict(env),
        **{name: secret_reference(name) for name in secrets},
    }
    return template


async def default_docker_template() -> dict[str, Any]:
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    template = await get_default_base_job_template_for_infrastructure_type("docker")
    if not template:
        raise SystemExit(
            "error: no default base job template for the docker worker type: install "
            "prefect-docker, or let the Prefect server reach its worker registry."
        )
    return template


def save_secrets(names: Sequence[str], environ: Mapping[str, str]) -> None:
    from prefect.blocks.system import Secret

    for name in names:
        Secret(value=environ[name]).save(name=secret_block_name(name), overwrite=True)


def _values(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    unset = [name for name in names if not environ.get(name)]
    if unset:
        raise SystemExit(f"error: set {', '.join(unset)} (passed to the stage containers)")
    return {name: environ[name] for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    docker = commands.add_parser("docker-template", help="write the imagic-gpu docker template")
    docker.add_argument("--out", required=True, type=Path, help="JSON file to write")
    docker.add_argument("--network", required=True, help="Docker network of the stack")
    docker.add_argument("--env", action="append", default=[], metavar="NAME")
    docker.add_argument("--secret", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)

    env = _values(args.env, os.environ)
    secrets = _values(args.secret, os.environ)
    template = docker_job_template(
        asyncio.run(default_docker_template()), network=args.network, env=env, secrets=args.secret
    )
    save_secrets(list(secrets), os.environ)
    args.out.write_text(json.dumps(template, indent=2) + "\n")
    print(
        f"docker job template: network {args.network}, env {', '.join(env)}, "
        f"secret blocks {', '.join(map(secret_block_name, secrets)) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
