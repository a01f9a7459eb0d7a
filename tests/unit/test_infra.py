"""infra/: the Compose stack, its environment, the Kubernetes manifests and the Helm values.

No Docker engine and no cluster are needed: the compose file is checked against the Compose
specification's JSON schema (infra/schema/compose-spec.json), the Kubernetes objects against
the Kubernetes 1.30 OpenAPI schemas (kubernetes-validate, strict), the Helm values against the
prefect-worker chart's values.schema.json, and the work-pool templates are rendered with
Prefect's own templating, as a worker renders them.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prefect.utilities.schema_tools import validate as prefect_validate
from prefect.utilities.templating import apply_values

from tests.integration.stack_commands import (
    InterpolationError,
    interpolate,
    load_compose,
    placeholders,
    service_command,
)

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
KUBERNETES_VERSION = "1.30"
CODE_DIRS = ("imagic", "steps", "flows")

# Read by the code or the stack although no line of ours names them the ways scanned below:
# boto3's, MLflow's and Prefect's own variables that the README tells users to set.
EXTERNAL_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_S3_ENDPOINT_URL",
    "PREFECT_API_URL",
}
# Set by the operating system, not configuration: not documented in .env.example.
OS_ENV = {"HOME", "PATH", "USER", "PWD", "SHELL", "TMPDIR", "LANG"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN")
# Values good enough to interpolate the whole file, as Compose does with a filled-in .env.
DUMMY_ENV = {
    "POSTGRES_PASSWORD": "pg-dummy",
    "MINIO_ROOT_PASSWORD": "minio-dummy",
    "AWS_ACCESS_KEY_ID": "key-dummy",
    "AWS_SECRET_ACCESS_KEY": "secret-dummy",
    "DOCKER_GID": "999",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


def _interpolate_tree(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, values)
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, values) for value in node]
    return node


def _schema_validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    ]


# ---- the compose file -------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(compose):
    validator = _schema_validator(INFRA / "schema" / "compose-spec.json")
    assert _errors(validator, compose) == []
    # ... and once interpolated as `--env-file infra/.env` would (types, ports, ids).
    assert _errors(validator, _interpolate_tree(compose, DUMMY_ENV)) == []


def test_compose_file_refuses_to_interpolate_without_the_secrets(compose):
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        _interpolate_tree(compose, {k: v for k, v in DUMMY_ENV.items() if "POSTGRES" not in k})


def test_secrets_are_required_variables_never_values(compose):
    """A secret appears only as `${VAR:?...}`: no literal, and no default to fall back on."""
    problems = []
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value):
                problems.append(f"{name}.environment.{key} = {value!r}")
    for text in _strings(compose):
        for match in re.finditer(r"(?<!\$)\$\{([A-Z_]+)(:?[-?])?", text):
            if SECRET_NAME.search(match[1]) and match[2] != ":?":
                problems.append(f"{match[0]}...: a secret must be ${{{match[1]}:?...}}")
    assert problems == []


def test_images_are_pinned(compose):
    images = {name: service["image"] for name, service in compose["services"].items()}
    for name, image in images.items():
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest" and "${" not in image, f"{name}: pin {image!r} by tag"
    prefect_yaml = yaml.safe_load((REPO / "prefect.yaml").read_text())
    step_image = prefect_yaml["definitions"]["gpu_job_variables"]["image"]
    template = json.loads((K8S / "base-job-template.json").read_text())
    assert template["variables"]["properties"]["image"]["default"] == step_image
    helm = yaml.safe_load((K8S / "values-prefect-worker.yaml").read_text())
    worker_tag = helm["worker"]["image"]["prefectTag"]
    assert re.fullmatch(r"\d+\.\d+\.\d+-python3\.\d+-kubernetes", worker_tag), worker_tag


def test_long_running_services_have_health_checks_and_one_shots_are_waited_for(compose):
    services = compose["services"]
    one_shots = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shots == {"minio-init", "setup"}
    awaited = set()
    for name, service in services.items():
        if name in one_shots:
            assert "healthcheck" not in service, name
        else:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: needs a health check"
            assert service.get("restart") == "unless-stopped", name
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in one_shots else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {dependency}"
            if dependency in one_shots and name not in one_shots:
                awaited.add(dependency)
    # `up --wait` treats a one-shot's exit as success only when a long-running service waits
    # for it with service_completed_successfully.
    assert awaited == one_shots


def test_volumes_are_named_or_repository_files(compose):
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert source in ("..", "/var/run/docker.sock") or (INFRA / source).exists(), (
                    f"{name}: {volume}"
                )
            else:
                used.add(source)
    assert used == declared


def test_gpu_worker_reserves_an_nvidia_gpu_and_reaches_docker(compose):
    worker = compose["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    command = service_command("worker-gpu", DUMMY_ENV)
    assert command[:7] == ["prefect", "worker", "start", "--pool", "imagic-gpu", "--type", "docker"]
    assert "--with-healthcheck" in command


def test_server_commands_with_their_container_defaults(compose):
    assert service_command("prefect-server", {}) == [
        "prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200", "--analytics-off",
    ]  # fmt: skip
    mlflow = service_command("mlflow", {})
    assert mlflow[:2] == ["mlflow", "server"]
    flags = dict(zip(mlflow[2::2], mlflow[3::2], strict=True))
    assert flags["--backend-store-uri"] == "postgresql://postgres:5432/mlflow"
    assert flags["--artifacts-destination"] == "s3://mlflow/"
    assert (flags["--host"], flags["--port"]) == ("0.0.0.0", "5000")
    # The health checks, the published ports and the services' URLs use those defaults.
    assert "4200" in str(compose["services"]["prefect-server"]["healthcheck"]["test"])
    assert "5000" in str(compose["services"]["mlflow"]["healthcheck"]["test"])


def test_native_values_replace_the_placeholders(tmp_path):
    command = service_command(
        "mlflow",
        {
            "IMAGIC_MLFLOW_HOST": "127.0.0.1",
            "IMAGIC_MLFLOW_PORT": "5123",
            "IMAGIC_MLFLOW_BACKEND_STORE_URI": "sqlite:///db",
        },
        bin_dir=tmp_path,
    )
    assert command[1:4] == ["server", "--backend-store-uri", "sqlite:///db"]
    assert command[6:10] == ["--host", "127.0.0.1", "--port", "5123"]


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("$A/b", {"A": "x"}, "x/b"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A:?msg}", {"A": "x"}, "x"),
        ("$${A} costs $$5", {"A": "x"}, "${A} costs $5"),
        ("http://${H:-h}:${P:-1}/api", {"P": "2"}, "http://h:2/api"),
    ],
)
def test_interpolation_follows_compose(text, values, expected):
    assert interpolate(text, values) == expected


@pytest.mark.parametrize(
    ("text", "values"),
    [("${A:?set A}", {}), ("${A:?set A}", {"A": ""}), ("${A?set A}", {}), ("${A}", {}), ("$", {})],
)
def test_interpolation_refuses_what_compose_refuses(text, values):
    with pytest.raises(InterpolationError):
        interpolate(text, values)


def test_service_command_must_be_an_exec_list(tmp_path):
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  s:\n    image: x:1\n    command: prefect server start\n")
    with pytest.raises(TypeError, match="must be a non-empty list"):
        service_command("s", {}, compose_file=path)
    with pytest.raises(KeyError, match="no service"):
        service_command("t", {}, compose_file=path)


# ---- the environment: every variable documented ------------------------------------------

_READ_PATTERNS = [
    re.compile(r"""environ\.get\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""),
    re.compile(r"""getenv\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""environ\.setdefault\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    # env-name constants: STORE_ENV = "IMAGIC_STORE", ENDPOINT_ENV: str = "..."
    re.compile(r"""^\s*[A-Z][A-Z0-9_]*_ENV\s*(?::[^=]+)?=\s*["']([A-Z][A-Z0-9_]*)["']""", re.M),
]
# Any string literal shaped like one of these families' variables (dict keys of defaults, the
# names a start check requires...): the code reads them through a loop or a mapping.
_ENV_LITERAL = re.compile(r"(?:IMAGIC|MLFLOW|AWS|PREFECT|HF)_[A-Z0-9_]+")


def code_env_vars() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for folder in CODE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            source = path.read_text()
            names = {name for pattern in _READ_PATTERNS for name in pattern.findall(source)}
            names |= {
                node.value
                for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _ENV_LITERAL.fullmatch(node.value)
            }
            for name in names - OS_ENV:
                found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def compose_env_vars(compose: dict[str, Any]) -> set[str]:
    return {name for text in _strings(compose) for name in placeholders(text)}


def documented_env_vars() -> dict[str, str]:
    """NAME -> its value in infra/.env.example (commented-out `# NAME=value` lines count)."""
    lines = (INFRA / ".env.example").read_text().splitlines()
    variable = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
    documented = {}
    for index, line in enumerate(lines):
        if match := variable.match(line):
            above = lines[index - 1] if index else ""
            assert above.startswith("#") and not variable.match(above), (
                f".env.example line {index + 1}: {match[2]} needs a comment line above it"
            )
            assert match[2] not in documented, f"{match[2]} documented twice"
            documented[match[2]] = "" if match[1] else match[3]
    return documented


def test_the_scan_finds_the_known_variables(compose):
    found = code_env_vars()
    for name in ("IMAGIC_STORE", "IMAGIC_S3_ENDPOINT_URL", "IMAGIC_MODEL", "HF_HUB_OFFLINE"):
        assert name in found
    assert {"POSTGRES_PASSWORD", "IMAGIC_MLFLOW_PORT"} <= compose_env_vars(compose)
    assert "POSTGRES_USER" in compose_env_vars(compose)  # from ${...}, not the $${...} escapes


def test_every_variable_the_code_and_the_stack_read_is_documented(compose):
    needed = set(code_env_vars()) | compose_env_vars(compose) | EXTERNAL_ENV
    documented = documented_env_vars()
    assert sorted(needed - set(documented)) == []
    # ... and nothing stale: each documented variable is read somewhere.
    assert sorted(set(documented) - needed) == []


def test_env_example_holds_no_secret_values():
    for name, value in documented_env_vars().items():
        if SECRET_NAME.search(name):
            assert value == "", f"{name}: leave it empty in .env.example"


# ---- Docker work pool template (infra/prefect_setup.py) ----------------------------------


def _prefect_setup():
    spec = importlib.util.spec_from_file_location("prefect_setup", INFRA / "prefect_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _registry_docker_template() -> dict[str, Any]:
    """The docker template of Prefect's bundled worker registry (no prefect-docker here)."""
    import prefect.server.api as api

    path = Path(api.__file__).parent / "collections_data/views/aggregate-worker-metadata.json"
    workers = json.loads(path.read_text())
    return next(
        worker["default_base_job_configuration"]
        for collection in workers.values()
        for worker in collection.values()
        if worker.get("type") == "docker"
    )


def _gpu_job_variables() -> dict[str, Any]:
    prefect_yaml = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return copy.deepcopy(prefect_yaml["definitions"]["gpu_job_variables"])


def _render(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What a worker does: variable defaults, overlaid by the deployment's values, applied."""
    properties = template["variables"]["properties"]
    variables = {key: prop["default"] for key, prop in properties.items() if "default" in prop}
    variables.update(values)
    prefect_validate(
        variables, template["variables"], raise_on_error=True, ignore_required=True,
        allow_none_with_default=True,
    )  # fmt: skip
    return apply_values(copy.deepcopy(template["job_configuration"]), variables)


def test_docker_template_passes_the_gpu_request_network_and_secrets():
    setup = _prefect_setup()
    template = setup.docker_job_template(
        _registry_docker_template(),
        network="imagic-pipeline",
        env={"IMAGIC_STORE": "s3://imagic/store", "MLFLOW_TRACKING_URI": "http://mlflow:5000"},
        secrets=["AWS_SECRET_ACCESS_KEY"],
    )
    config = _render(template, _gpu_job_variables())
    assert config["container_create_kwargs"]["device_requests"][0]["driver"] == "nvidia"
    assert config["image"] == "imagic-pipeline/step-gpu:0.1.0"
    assert config["networks"] == ["imagic-pipeline"]
    assert config["volumes"] == ["imagic-model-cache:/home/imagic/.cache/huggingface"]
    assert config["auto_remove"] is True
    assert config["env"] == {
        "IMAGIC_STORE": "s3://imagic/store",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "AWS_SECRET_ACCESS_KEY": "{{ prefect.blocks.secret.imagic-aws-secret-access-key }}",
    }
    assert setup.secret_block_name("AWS_ACCESS_KEY_ID") == "imagic-aws-access-key-id"


# ---- Kubernetes -----------------------------------------------------------------------------


def _k8s_validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _rendered_job(values: dict[str, Any]) -> dict[str, Any]:
    template = json.loads((K8S / "base-job-template.json").read_text())
    config = _render(template, values)
    job = config["job_manifest"]
    # The kubernetes worker then turns `env` into a list and `command` into the args.
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in container.get("env", {}).items()]
    container["args"] = shlex.split(container.get("args", ""))
    return job


def test_kubernetes_base_job_template_has_the_standard_shape():
    template = json.loads((K8S / "base-job-template.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    manifest = template["job_configuration"]["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    properties = template["variables"]["properties"]
    for name in ("image", "namespace", "env", "gpu_limit", "node_selector", "tolerations"):
        assert name in properties
    assert properties["gpu_limit"]["default"] == 1
    jsonschema.Draft7Validator.check_schema(template["variables"])
    pod = manifest["spec"]["template"]["spec"]
    assert (pod["nodeSelector"], pod["tolerations"]) == ("{{ node_selector }}", "{{ tolerations }}")
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"
    assert {"secretRef": {"name": "{{ credentials_secret }}"}} in container["envFrom"]


def test_kubernetes_job_rendered_with_defaults_validates():
    job = _rendered_job({"name": "optimize-1a2b", "command": "prefect flow-run execute"})
    _k8s_validate(job)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}, "requests": {}}
    assert {"secretRef": {"name": "imagic-credentials"}} in container["envFrom"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert job["metadata"]["namespace"] == "imagic"


def test_kubernetes_job_rendered_for_the_stage_deployments_validates():
    """prefect.yaml's job variables (docker keys included) fit the template's schema."""
    values = {
        **_gpu_job_variables(),
        "name": "finetune-3c4d",
        "command": "prefect flow-run execute",
        "env": {"PREFECT__FLOW_RUN_ID": "0b6d2a6e-59d8-4a58-bd4e-8c7f5d1c2f3a"},
        "labels": {"prefect.io/flow-run-id": "0b6d2a6e-59d8-4a58-bd4e-8c7f5d1c2f3a"},
        "cpu_request": "4",
        "memory_limit": "32Gi",
        "gpu_limit": 2,
    }
    job = _rendered_job(values)
    _k8s_validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": 2}
    assert container["image"] == "imagic-pipeline/step-gpu:0.1.0"
    tolerations = job["spec"]["template"]["spec"]["tolerations"]
    assert tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_kubernetes_job_refuses_a_bad_gpu_limit():
    with pytest.raises(Exception, match=r"-1 is less than the minimum"):
        _rendered_job({"name": "x", "gpu_limit": -1})


def test_every_kubernetes_manifest_in_infra_validates():
    manifests = [
        (path.name, document)
        for path in sorted(K8S.glob("*.y*ml"))
        for document in yaml.safe_load_all(path.read_text())
        if isinstance(document, dict) and {"apiVersion", "kind"} <= set(document)
    ]
    assert {name for name, _ in manifests} == {"secrets.example.yaml"}
    for _, document in manifests:
        _k8s_validate(document)


def test_example_secrets_validate_and_hold_placeholders_only():
    documents = [d for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()) if d]
    assert {(d["kind"], d["metadata"]["name"]) for d in documents} >= {
        ("Secret", "imagic-credentials"),
        ("Secret", "prefect-basic-auth"),
    }
    for document in documents:
        _k8s_validate(document)
        if document["kind"] == "Secret":
            for key, value in document["stringData"].items():
                assert "<" in value and ">" in value, f"{key}: a <placeholder>, not a value"
    assert "kubectl" in (K8S / "secrets.example.yaml").read_text()


def test_helm_values_validate_against_the_chart_schema():
    values = yaml.safe_load((K8S / "values-prefect-worker.yaml").read_text())
    worker = values["worker"]
    assert (worker["config"]["workPool"], worker["config"]["type"]) == ("imagic-gpu", "kubernetes")
    # What `--set-file worker.config.baseJobTemplate.configuration=...` makes of it.
    worker["config"]["baseJobTemplate"]["configuration"] = (
        K8S / "base-job-template.json"
    ).read_text()
    validator = _schema_validator(INFRA / "schema" / "prefect-worker.values.schema.json")
    assert _errors(validator, values) == []
    auth = worker["selfHostedServerApiConfig"]["basicAuth"]
    assert auth["existingSecret"] == "prefect-basic-auth" and "authString" not in auth


# ---- scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["setup.sh", "e2e.sh"])
def test_shell_scripts_are_strict_and_parse(script):
    path = INFRA / script
    assert "set -euo pipefail" in path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shellcheck := shutil.which("shellcheck"):
        result = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_minio_init_script_parses(compose):
    script = interpolate(compose["services"]["minio-init"]["command"][0], {})
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert "mc mb --ignore-existing stack/imagic stack/mlflow" in script
