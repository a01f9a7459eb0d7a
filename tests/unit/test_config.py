"""Unit tests for imagic.config: defaults, validation messages and serialisation of the params."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from imagic.config import (
    ETA_MAX,
    FULL_FINETUNE_LR,
    LORA_FINETUNE_LR,
    MAX_SEED,
    EditSpec,
    FinetuneParams,
    GenerateParams,
    OptimizeParams,
    parse_params,
)
from imagic.errors import ImagicError, InvalidParamsError

BASE = {"image": "input.png", "text": "a bird spreading its wings", "model": "./tiny-sd"}


def spec(**overrides: Any) -> dict[str, Any]:
    return {**BASE, **overrides}


def invalid(data: Any, model: type = EditSpec, **kwargs: Any) -> str:
    """The message of the InvalidParamsError that parsing `data` raises."""
    with pytest.raises(InvalidParamsError) as excinfo:
        parse_params(model, data, **kwargs)
    return str(excinfo.value)


def problem_lines(message: str) -> list[str]:
    return [line for line in message.splitlines()[1:] if line.startswith("  ")]


# --- defaults ---------------------------------------------------------------------------------


def test_optimize_defaults() -> None:
    params = OptimizeParams()
    assert params.steps == 500
    assert params.learning_rate == 1e-3


def test_finetune_defaults_full() -> None:
    params = FinetuneParams()
    assert params.steps == 1000
    assert params.lora is False
    assert params.learning_rate == FULL_FINETUNE_LR == 2e-6
    assert params.save_dtype == "float16"


def test_finetune_lora_resolves_lora_learning_rate() -> None:
    params = FinetuneParams(lora=True)
    assert params.learning_rate == LORA_FINETUNE_LR == 1e-4
    assert params.lora_rank == 4


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_explicit_learning_rate_is_kept(lora: bool) -> None:
    params = FinetuneParams(lora=lora, learning_rate=3e-5)
    assert params.learning_rate == 3e-5


def test_generate_defaults() -> None:
    params = GenerateParams()
    assert params.etas == [0.6, 0.7, 0.8]
    assert params.seeds == [0, 1, 2]
    assert params.num_inference_steps == 50
    assert params.guidance_scale == 7.5
    assert params.guidance_rescale == 0.0
    assert params.scheduler == "ddim"


def test_edit_spec_defaults_fill_the_stages() -> None:
    parsed = parse_params(EditSpec, spec())
    assert parsed.text == BASE["text"]
    assert parsed.device == "auto"
    assert parsed.precision == "auto"
    assert parsed.optimize == OptimizeParams()
    assert parsed.finetune.learning_rate == FULL_FINETUNE_LR
    assert parsed.generate.etas == [0.6, 0.7, 0.8]


def test_nested_lora_flag_resolves_learning_rate_inside_edit_spec() -> None:
    parsed = parse_params(EditSpec, spec(finetune={"lora": True}))
    assert parsed.finetune.learning_rate == LORA_FINETUNE_LR


# --- accepted edge values ---------------------------------------------------------------------


@pytest.mark.parametrize("etas", [[0.0], [1.2], [ETA_MAX], [1.5, 1.2, 0.0, 1.0]])
def test_etas_in_range_are_accepted(etas: list[float]) -> None:
    assert parse_params(EditSpec, spec(generate={"etas": etas})).generate.etas == etas


def test_guidance_zero_is_accepted() -> None:
    parsed = parse_params(EditSpec, spec(generate={"guidance_scale": 0}))
    assert parsed.generate.guidance_scale == 0.0


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:1"])
def test_device_names_accepted_by_validation(device: str) -> None:
    assert parse_params(EditSpec, spec(device=device)).device == device


def test_largest_seed_is_accepted() -> None:
    parsed = parse_params(EditSpec, spec(generate={"seeds": [MAX_SEED]}, optimize={"seed": 0}))
    assert parsed.generate.seeds == [MAX_SEED]


# --- refused values: each message names the field, the value and what is allowed ---------------


@pytest.mark.parametrize(
    ("etas", "expected"),
    [
        ([-0.1], r"generate\.etas = \[-0\.1\]: every eta must be in \[0, 1\.5\]"),
        ([1.51], r"generate\.etas = \[1\.51\]: every eta must be in \[0, 1\.5\]"),
        ([0.5, 2.0], r"generate\.etas = \[0\.5, 2\.0\]: .*got \[2\.0\]"),
        ([], r"generate\.etas = \[\]: give at least one eta, e\.g\. 0\.6 0\.7 0\.8"),
        ([0.6, 0.6], r"generate\.etas = \[0\.6, 0\.6\]: etas must not repeat"),
    ],
)
def test_bad_etas_are_refused(etas: list[float], expected: str) -> None:
    message = invalid(spec(generate={"etas": etas}))
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [
        ([-1], r"generate\.seeds = \[-1\]: seeds must be integers in \[0, 2\*\*63 - 1\]"),
        ([3, 3], r"generate\.seeds = \[3, 3\]: seeds must not repeat"),
        ([2**63], r"generate\.seeds = \[9223372036854775808\]: seeds must be integers in"),
        ([], r"generate\.seeds = \[\]: give at least one seed"),
    ],
)
def test_bad_seeds_are_refused(seeds: list[int], expected: str) -> None:
    message = invalid(spec(generate={"seeds": seeds}))
    assert re.search(expected, message), message


@pytest.mark.parametrize("stage", ["optimize", "finetune"])
@pytest.mark.parametrize("seed", [-1, 2**63])
def test_bad_stage_seed_is_refused(stage: str, seed: int) -> None:
    message = invalid(spec(**{stage: {"seed": seed}}))
    assert f"{stage}.seed = {seed}:" in message
    assert re.search(
        r"greater than or equal to 0|less than or equal to 9223372036854775807", message
    )


@pytest.mark.parametrize(
    ("stage", "field"),
    [("optimize", "steps"), ("finetune", "steps"), ("generate", "num_inference_steps")],
)
@pytest.mark.parametrize("steps", [0, -5])
def test_non_positive_steps_are_refused(stage: str, field: str, steps: int) -> None:
    message = invalid(spec(**{stage: {field: steps}}))
    assert f"{stage}.{field} = {steps}: Input should be greater than 0" in message


@pytest.mark.parametrize("stage", ["optimize", "finetune"])
@pytest.mark.parametrize("learning_rate", [0, -1e-4])
def test_non_positive_learning_rate_is_refused(stage: str, learning_rate: float) -> None:
    message = invalid(spec(**{stage: {"learning_rate": learning_rate}}))
    assert f"{stage}.learning_rate = {learning_rate!r}:" in message
    assert "greater than 0" in message


def test_negative_guidance_is_refused() -> None:
    message = invalid(spec(generate={"guidance_scale": -1.0}))
    assert "generate.guidance_scale = -1.0: Input should be greater than or equal to 0" in message


@pytest.mark.parametrize(
    ("rescale", "rule"),
    [(-0.1, "greater than or equal to 0"), (1.5, "less than or equal to 1")],
)
def test_guidance_rescale_outside_0_to_1_is_refused(rescale: float, rule: str) -> None:
    message = invalid(spec(generate={"guidance_rescale": rescale}))
    assert f"generate.guidance_rescale = {rescale}: Input should be {rule}" in message


def test_unknown_precision_is_refused() -> None:
    message = invalid(spec(precision="fp8"))
    assert "precision = 'fp8':" in message
    assert "'auto', 'fp32', 'fp16' or 'bf16'" in message


def test_unknown_scheduler_is_refused() -> None:
    message = invalid(spec(generate={"scheduler": "karras"}))
    assert "generate.scheduler = 'karras':" in message
    assert "'ddim'" in message and "'euler'" in message


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "xpu", "cuda:", "CPU", "cuda:0 "])
def test_unknown_device_is_refused(device: str) -> None:
    message = invalid(spec(device=device))
    assert f"device = {device!r}: use one of auto, cpu, mps, cuda, cuda:N" in message


@pytest.mark.parametrize("device", ["cpu\n", "cuda:0\n"])
def test_device_with_trailing_newline_is_refused(device: str) -> None:
    # `$` in a re.match pattern also matches before a final newline; torch.device would then
    # fail later with a RuntimeError instead of this user-facing error.
    message = invalid(spec(device=device))
    assert f"device = {device!r}: use one of auto, cpu, mps, cuda, cuda:N" in message


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused(text: str) -> None:
    message = invalid(spec(text=text))
    assert f"text = {text!r}: the target text is empty; describe the edited image" in message


@pytest.mark.parametrize("model", ["", "  "])
def test_empty_model_is_refused(model: str) -> None:
    message = invalid(spec(model=model))
    assert f"model = {model!r}: give a local diffusers folder, a hub id, or leave it out" in message
    assert "imagic:toy" in message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec(colour="red"), "colour"),
        (spec(optimize={"stepz": 3}), "optimize.stepz"),
        (spec(generate={"eta": [0.7]}), "generate.eta"),
    ],
)
def test_unknown_field_is_named_with_a_spelling_hint(data: dict[str, Any], field: str) -> None:
    message = invalid(data)
    assert f"  {field}: unknown field; remove it or check its spelling" in message


def test_unknown_field_in_a_stage_model() -> None:
    message = invalid({"steps": 10, "lr": 0.1}, model=OptimizeParams)
    assert "invalid OptimizeParams (1 problem(s))" in message
    assert "  lr: unknown field; remove it or check its spelling" in message


def test_missing_required_fields_are_each_listed() -> None:
    message = invalid({})
    assert "invalid EditSpec (2 problem(s))" in message
    assert "  image: missing; this field is required" in message
    assert "  text: missing; this field is required" in message
    assert "model:" not in message  # optional: the shipped toy model


def test_wrongly_typed_field_is_refused() -> None:
    message = invalid(spec(optimize={"steps": "many"}))
    assert "optimize.steps = 'many':" in message
    assert "valid integer" in message


def test_non_mapping_request_is_reported_as_the_request() -> None:
    message = invalid(["not", "a", "mapping"], model=OptimizeParams)
    assert "(request) = ['not', 'a', 'mapping']:" in message


def test_several_problems_are_reported_in_one_error() -> None:
    data = spec(
        text=" ",
        device="tpu",
        optimize={"steps": 0},
        finetune={"learning_rate": -1.0},
        generate={"etas": [2.0], "seeds": [1, 1]},
        colour="red",
    )
    message = invalid(data)
    lines = problem_lines(message)
    assert message.splitlines()[0] == "invalid EditSpec (7 problem(s)):"
    assert len(lines) == 7
    for field in [
        "text",
        "device",
        "optimize.steps",
        "finetune.learning_rate",
        "generate.etas",
        "generate.seeds",
        "colour",
    ]:
        assert any(line.strip().startswith(field) for line in lines), (field, message)


def test_flags_put_the_cli_flag_next_to_the_field() -> None:
    flags = {"generate.etas": "--etas", "optimize.steps": "--optimize-steps", "text": "--text"}
    message = invalid(spec(generate={"etas": [9.0]}, optimize={"steps": 0}), flags=flags)
    assert "generate.etas (--etas) = [9.0]:" in message
    assert "optimize.steps (--optimize-steps) = 0:" in message
    assert "--text" not in message  # only fields with a problem are listed


def test_field_without_a_flag_is_named_plainly() -> None:
    message = invalid(spec(generate={"seeds": [-1]}), flags={"generate.etas": "--etas"})
    assert "  generate.seeds = [-1]:" in message
    assert "--etas" not in message


def test_invalid_params_error_is_an_imagic_error_without_pydantic_chain() -> None:
    with pytest.raises(ImagicError) as excinfo:
        parse_params(EditSpec, spec(device="tpu"))
    assert isinstance(excinfo.value, InvalidParamsError)
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__ is True


# --- immutability and serialisation -----------------------------------------------------------


def test_models_are_frozen() -> None:
    parsed = parse_params(EditSpec, spec())
    with pytest.raises(ValidationError):
        parsed.text = "something else"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        parsed.generate.num_inference_steps = 10  # type: ignore[misc]
    with pytest.raises(ValidationError):
        parsed.finetune.learning_rate = 1.0  # type: ignore[misc]
    assert parsed.generate.num_inference_steps == 50


def test_model_dump_and_validate_round_trip() -> None:
    parsed = parse_params(
        EditSpec,
        spec(
            model_revision="main",
            device="cuda:1",
            precision="bf16",
            optimize={"steps": 7, "learning_rate": 5e-3, "seed": MAX_SEED},
            finetune={"lora": True, "lora_rank": 8, "save_dtype": "float32"},
            generate={"etas": [0.0, 1.2], "seeds": [5], "scheduler": "euler"},
        ),
    )
    dumped = parsed.model_dump()
    assert dumped["finetune"]["learning_rate"] == LORA_FINETUNE_LR  # resolved value recorded
    assert dumped["optimize"]["seed"] == MAX_SEED
    again = parse_params(EditSpec, dumped)
    assert again == parsed
    assert again.model_dump() == dumped
    assert EditSpec.model_validate_json(parsed.model_dump_json()) == parsed


def test_round_trip_keeps_an_explicit_learning_rate() -> None:
    params = FinetuneParams(lora=True, learning_rate=3e-4)
    assert FinetuneParams.model_validate(params.model_dump()).learning_rate == 3e-4
