"""Unit tests for imagic.toyworld.adherence: the procedural caption-adherence check.

The check is only useful if it says yes to images that show their caption and no to images
that do not, so both directions are tested: ground-truth renders must pass, and the same
renders judged against a caption with one wrong colour, shape or position must fail that check.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from imagic.toyworld.adherence import AdherenceResult, adherence_rate, check_sample
from imagic.toyworld.drawing import background_array
from imagic.toyworld.scenes import (
    Scene,
    SceneObject,
    apply_edit,
    possible_edits,
    render,
    render_array,
    sample_scene,
)
from imagic.toyworld.vocabulary import BACKGROUND_COLOURS

SEEDS = range(200)


def test_ground_truth_renders_adhere_to_their_captions() -> None:
    scenes = {seed: sample_scene(seed) for seed in SEEDS}
    results = {seed: check_sample(render_array(scene), scene) for seed, scene in scenes.items()}
    failures = {seed: result.reason for seed, result in results.items() if not result.ok}
    rates = adherence_rate(list(results.values()))
    assert rates["ok"] >= 0.98, failures
    assert all(result.reason == "" for result in results.values() if result.ok)


def test_pil_image_and_array_give_the_same_verdict() -> None:
    scene = sample_scene(3)
    assert check_sample(render(scene), scene) == check_sample(render_array(scene), scene)


def test_a_sample_a_few_pixels_off_still_adheres() -> None:
    """Generated samples are not pixel-exact: a shift of 2 pixels must not matter."""
    for seed in range(40):
        scene = sample_scene(seed)
        shifted = np.roll(render_array(scene), (2, -2), axis=(0, 1))
        result = check_sample(shifted, scene)
        assert result.ok, (seed, result.reason)


@pytest.mark.parametrize("kind", ["colour", "shape", "position"])
def test_a_wrong_caption_fails_the_matching_check(kind: str) -> None:
    """The original image judged against a scene with one attribute edited."""
    caught, total = 0, 0
    for seed in SEEDS:
        scene = sample_scene(seed)
        edits = possible_edits(scene, kind)
        if not edits:  # shape edits need a rigid object
            continue
        wrong = apply_edit(scene, random.Random(seed).choice(edits))
        result = check_sample(render_array(scene), wrong)
        total += 1
        caught += not getattr(result, kind)
        assert not result.ok
        if kind == "shape":  # a wrong shape must not be blamed on colour or position
            assert result.colour and result.position, (seed, result.reason)
    assert total >= 100
    assert caught / total >= 0.95


def test_same_coloured_objects_are_told_apart_by_position() -> None:
    circle_left = SceneObject("circle", "red", "large", "left")
    square_right = SceneObject("square", "red", "large", "right")
    scene = Scene("white", "plain", (circle_left, square_right))
    image = render_array(scene)
    assert check_sample(image, scene).ok
    swapped = Scene(
        "white",
        "plain",
        (
            SceneObject("square", "red", "large", "left"),
            SceneObject("circle", "red", "large", "right"),
        ),
    )
    result = check_sample(image, swapped)
    assert not result.shape
    assert result.colour and result.position


def test_position_failure_names_the_nearest_position() -> None:
    scene = Scene("grey", "striped", (SceneObject("star", "yellow", "small", "left"),))
    moved = apply_edit(scene, possible_edits(scene, "position")[0])
    result = check_sample(render_array(scene), moved)
    assert not result.position
    assert "object 0 (yellow star," in result.reason
    assert "is nearest 'left'" in result.reason


def test_blank_and_noise_images_fail() -> None:
    rng = np.random.default_rng(0)
    for seed in range(20):
        scene = sample_scene(seed)
        blank = check_sample(background_array(scene.background, scene.texture, 64), scene)
        assert (blank.colour, blank.shape, blank.position) == (False, False, False)
        assert "pixels, expected at least" in blank.reason
        noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        assert not check_sample(noise, scene).ok


def test_a_fragment_of_the_object_is_not_enough() -> None:
    """An object mostly painted over by the background is not found: colour (and so all) fail."""
    scene = Scene("white", "plain", (SceneObject("circle", "blue", "large", "centre"),))
    image = render_array(scene)
    image[:, :37] = BACKGROUND_COLOURS["white"]  # keeps a fifth of the circle, its right edge
    result = check_sample(image, scene)
    assert (result.colour, result.shape, result.position) == (False, False, False)
    assert "blue pixels, expected at least" in result.reason


def test_bad_image_shapes_are_rejected() -> None:
    scene = sample_scene(0)
    with pytest.raises(ValueError, match="square RGB"):
        check_sample(np.zeros((64, 48, 3), dtype=np.uint8), scene)
    with pytest.raises(ValueError, match="square RGB"):
        check_sample(np.zeros((64, 64), dtype=np.uint8), scene)


def test_adherence_rate_counts_each_check() -> None:
    results = [
        AdherenceResult(colour=True, shape=True, position=True),
        AdherenceResult(colour=True, shape=False, position=True, reason="shape"),
        AdherenceResult(colour=False, shape=False, position=False, reason="missing"),
        AdherenceResult(colour=True, shape=True, position=False, reason="position"),
    ]
    assert [result.ok for result in results] == [True, False, False, False]
    assert adherence_rate(results) == {"ok": 0.25, "colour": 0.75, "shape": 0.5, "position": 0.5}
    with pytest.raises(ValueError, match="at least one"):
        adherence_rate([])
