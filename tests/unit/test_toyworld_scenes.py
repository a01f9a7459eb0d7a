"""Unit tests for imagic.toyworld.scenes: determinism, coverage, captions, masks and edits.

The toy world is the ground truth of the quality benchmark, so these tests check the promises
the benchmark relies on: pixel-exact masks, captions that name every attribute, and edits that
change exactly one attribute while every pixel outside the edited object stays identical.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagic.toyworld import drawing
from imagic.toyworld.scenes import (
    EDIT_KINDS,
    Edit,
    Scene,
    SceneObject,
    apply_edit,
    bounding_box,
    canonical_caption,
    caption,
    caption_words,
    describe,
    edit_ground_truth,
    edit_region,
    edit_text,
    masks,
    possible_edits,
    render,
    render_array,
    sample_edit,
    sample_scene,
    scene_from_description,
    vocabulary,
)
from imagic.toyworld.vocabulary import (
    BACKGROUND_COLOURS,
    FEATURE_COLOUR,
    OBJECT_COLOURS,
    POSE_AFTER_NOUN,
    POSE_BEFORE_NOUN,
    POSES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    TEMPLATES,
    TEXTURE_WORDS,
    TEXTURES,
)

SIZE = 64
STYLES = range(len(TEMPLATES))
SCENES = [sample_scene(seed) for seed in range(200)]
RED_CIRCLE = SceneObject("circle", "red", "large", "left")
STICK_FIGURE = SceneObject("stick figure", "blue", "small", "right", "arms up")
PAIR = Scene("white", "plain", (RED_CIRCLE, STICK_FIGURE))
SINGLE = Scene("white", "plain", (RED_CIRCLE,))


def all_objects(position: str = "centre", size: str = "large") -> Iterator[SceneObject]:
    """One object of every shape and pose (first colour), at one position and size."""
    for shape in SHAPES:
        for pose in POSES.get(shape, (None,)):
            yield SceneObject(shape, "red", size, position, pose)


def distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Boolean array over pixels (shape (..., 3)): True where the pixel is exactly `rgb`."""
    return (pixels == rgb).all(axis=-1)


def dilate(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel in all eight directions."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    grown = np.zeros_like(mask)
    for dy, dx in itertools.product((0, 1, 2), repeat=2):
        grown |= padded[dy : dy + height, dx : dx + width]
    return grown


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_the_same_scene_image_captions_and_edit() -> None:
    for seed in (0, 1, 12345):
        first, second = sample_scene(seed), sample_scene(seed)
        assert first == second
        assert render(first).tobytes() == render(second).tobytes()
        assert [caption(first, style=s) for s in STYLES] == [
            caption(second, style=s) for s in STYLES
        ]
        assert caption(first, rng=seed) == caption(second, rng=random.Random(seed))
        assert sample_edit(first, seed) == sample_edit(second, random.Random(seed))


def test_a_seed_and_a_random_instance_agree_and_an_instance_advances() -> None:
    assert sample_scene(5) == sample_scene(random.Random(5))
    rng = random.Random(5)
    first, second = sample_scene(rng), sample_scene(rng)
    assert first == sample_scene(5)
    assert second != first


def test_different_seeds_give_different_scenes_and_images() -> None:
    scenes = [sample_scene(seed) for seed in range(50)]
    assert len(set(scenes)) >= 45
    assert len({render(scene).tobytes() for scene in scenes}) == len(set(scenes))


def test_seed_zero_is_pinned_so_datasets_stay_reproducible() -> None:
    """A change to the sampling order silently changes every dataset: this catches it."""
    scene = sample_scene(0)
    assert describe(scene) == {
        "background": "black",
        "texture": "dotted",
        "objects": [
            {
                "shape": "triangle",
                "colour": "blue",
                "size": "large",
                "position": "bottom",
                "pose": None,
            },
            {
                "shape": "star",
                "colour": "yellow",
                "size": "large",
                "position": "left",
                "pose": None,
            },
        ],
    }
    assert canonical_caption(scene) == (
        "a large blue triangle at the bottom and a large yellow star on the left "
        "on a dotted black background"
    )


def test_rng_must_be_a_random_or_an_int() -> None:
    with pytest.raises(TypeError, match=r"rng must be a random\.Random or an int seed, not str"):
        sample_scene("7")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Scenes


def test_2000_samples_cover_every_attribute_value() -> None:
    seen: dict[str, set[object]] = collections.defaultdict(set)
    for seed in range(2000):
        scene = sample_scene(seed)
        seen["background"].add(scene.background)
        seen["texture"].add(scene.texture)
        seen["count"].add(len(scene.objects))
        for obj in scene.objects:
            for field in ("shape", "colour", "size", "position"):
                seen[field].add(getattr(obj, field))
            seen["pose"].add((obj.shape, obj.pose))
    assert seen["background"] == set(BACKGROUND_COLOURS)
    assert seen["texture"] == set(TEXTURES)
    assert seen["count"] == {1, 2}
    assert seen["shape"] == set(SHAPES)
    assert seen["colour"] == set(OBJECT_COLOURS) and len(OBJECT_COLOURS) >= 6
    assert seen["size"] == set(SIZES)
    assert seen["position"] == set(POSITIONS)
    expected_poses = {(shape, pose) for shape in SHAPES for pose in POSES.get(shape, (None,))}
    assert seen["pose"] == expected_poses


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: SceneObject("hexagon", "red", "large", "left"),
            r"SceneObject.shape 'hexagon'.*circle, square",
        ),
        (
            lambda: SceneObject("circle", "pink", "large", "left"),
            r"SceneObject.colour 'pink'.*red, orange",
        ),
        (
            lambda: SceneObject("circle", "red", "huge", "left"),
            r"SceneObject.size 'huge'.*small, large",
        ),
        (
            lambda: SceneObject("circle", "red", "large", "middle"),
            r"SceneObject.position 'middle'.*centre",
        ),
        (
            lambda: SceneObject("circle", "red", "large", "left", "arms up"),
            r"pose 'arms up'.*no pose.*pose=None",
        ),
        (
            lambda: SceneObject("stick figure", "red", "large", "left"),
            r"pose None.*arms up, arms down",
        ),
        (
            lambda: SceneObject("face", "red", "large", "left", "arms up"),
            r"face needs one of the poses: smiling, frowning",
        ),
        (lambda: Scene("blue", "plain", (RED_CIRCLE,)), r"Scene.background 'blue'.*white, grey"),
        (
            lambda: Scene("white", "wavy", (RED_CIRCLE,)),
            r"Scene.texture 'wavy'.*plain, striped, dotted",
        ),
        (lambda: Scene("white", "plain", ()), r"Scene.objects has 0 objects; a scene holds 1 to 2"),
        (
            lambda: Scene("white", "plain", (RED_CIRCLE, STICK_FIGURE, STICK_FIGURE)),
            r"has 3 objects",
        ),
        (
            lambda: Scene("white", "plain", (RED_CIRCLE, RED_CIRCLE)),
            r"objects 0 and 1 are both at 'left'",
        ),
        (
            lambda: Scene("white", "plain", ("circle",)),
            r"Scene.objects\[0\] is a str; use a SceneObject",
        ),
    ],
)
def test_invalid_scenes_raise_a_helpful_value_error(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_describe_round_trips_through_json() -> None:
    for scene in SCENES[:50]:
        description = json.loads(json.dumps(describe(scene)))
        assert scene_from_description(description) == scene


def test_a_list_of_objects_becomes_a_tuple_so_scenes_are_hashable() -> None:
    scene = Scene("white", "plain", [RED_CIRCLE])  # type: ignore[arg-type]
    assert scene.objects == (RED_CIRCLE,)
    assert hash(scene) == hash(SINGLE)
    assert SINGLE.free_positions() == ["right", "top", "bottom", "centre"]


# ---------------------------------------------------------------------------------------------
# Captions


def object_phrases(obj: SceneObject) -> set[str]:
    """Every way a caption may mention the object, with its article, noun and position."""
    phrases = set()
    for size, before, after, where in itertools.product(
        SIZE_WORDS[obj.size],
        POSE_BEFORE_NOUN.get(obj.pose or "", ("",)),
        POSE_AFTER_NOUN.get(obj.pose or "", ("",)),
        POSITION_PHRASES[obj.position],
    ):
        noun = " ".join(word for word in (size, obj.colour, before, obj.shape, after) if word)
        phrases |= {f"a {noun} {where}", f"{where}, a {noun}"}
    return phrases


def background_phrases(scene: Scene) -> set[str]:
    return {f"{word} {scene.background}".strip() for word in TEXTURE_WORDS[scene.texture]}


def some_captions(scene: Scene) -> Iterator[str]:
    """Every template with canonical words, and random paraphrases."""
    for style in STYLES:
        yield caption(scene, style=style)
        yield caption(scene, rng=style, style=style)
    for seed in range(3):
        yield caption(scene, rng=random.Random(seed))


def test_canonical_caption_examples() -> None:
    assert canonical_caption(SINGLE) == "a large red circle on the left on a white background"
    assert [caption(SINGLE, style=style) for style in STYLES] == [
        "a large red circle on the left on a white background",
        "a white background with a large red circle on the left",
        "on the left, a large red circle; the background is white",
        "a picture of a large red circle on the left against a white background",
        "there is a large red circle on the left, and the background is white",
    ]
    scene = Scene(
        "navy",
        "striped",
        (
            SceneObject("stick figure", "blue", "small", "top", "arms up"),
            SceneObject("face", "yellow", "large", "centre", "frowning"),
        ),
    )
    assert canonical_caption(scene) == (
        "a small blue stick figure with its arms up at the top and "
        "a large yellow frowning face in the centre on a striped navy background"
    )


def test_canonical_caption_uses_the_canonical_word_of_every_attribute() -> None:
    for scene in SCENES:
        text = canonical_caption(scene)
        assert text == caption(scene) == caption(scene, style=0)
        for obj in scene.objects:
            assert SIZE_WORDS[obj.size][0] in caption_words(text)
            assert POSITION_PHRASES[obj.position][0] in text
            noun = (
                f"{obj.colour} {POSE_BEFORE_NOUN[obj.pose][0]} {obj.shape}"
                if obj.pose in POSE_BEFORE_NOUN
                else f"{obj.colour} {obj.shape}"
            )
            assert noun in text
            if obj.pose in POSE_AFTER_NOUN:
                assert f"{obj.shape} {POSE_AFTER_NOUN[obj.pose][0]}" in text
        assert f"{TEXTURE_WORDS[scene.texture][0]} {scene.background} background".strip() in text


def test_every_paraphrase_mentions_every_attribute_of_every_object() -> None:
    for scene in SCENES:
        for text in some_captions(scene):
            for obj in scene.objects:
                assert any(phrase in text for phrase in object_phrases(obj)), (text, obj)
            assert any(phrase in text for phrase in background_phrases(scene)), text
            assert re.fullmatch(r"[a-z ,;]+", text), text


def test_templates_and_paraphrases_vary() -> None:
    assert len({caption(PAIR, style=style) for style in STYLES}) == len(TEMPLATES) >= 5
    paraphrases = {caption(PAIR, rng=seed) for seed in range(200)}
    assert len(paraphrases) > 50
    orders = {text.index("circle") < text.index("stick figure") for text in paraphrases}
    assert orders == {True, False}  # random captions also shuffle the objects


def test_invalid_style_raises() -> None:
    for style in (-1, len(TEMPLATES), "0"):
        with pytest.raises(ValueError, match=rf"style {style!r} is not valid; use 0 to 4"):
            caption(SINGLE, style=style)  # type: ignore[arg-type]


def test_vocabulary_holds_every_caption_word_and_nothing_else() -> None:
    words = vocabulary()
    assert words == sorted(set(words))
    assert all(re.fullmatch(r"[a-z]+", word) for word in words)
    used: set[str] = set()
    for scene in SCENES:
        for text in some_captions(scene):
            used.update(caption_words(text))
    assert used <= set(words), used - set(words)
    assert used == set(words), set(words) - used  # no dead words for the tokenizer


# ---------------------------------------------------------------------------------------------
# Colours, textures and geometry


def test_colours_are_well_separated_and_names_unambiguous() -> None:
    objects = list(OBJECT_COLOURS.values())
    backgrounds = list(BACKGROUND_COLOURS.values())
    backgrounds += [drawing.texture_colour(name) for name in BACKGROUND_COLOURS]
    assert min(distance(a, b) for a, b in itertools.combinations(objects, 2)) >= 90
    assert min(distance(a, b) for a in objects for b in backgrounds) >= 90
    assert min(distance(FEATURE_COLOUR, a) for a in objects) >= 90
    assert not set(OBJECT_COLOURS) & set(BACKGROUND_COLOURS)


@pytest.mark.parametrize("background", list(BACKGROUND_COLOURS))
def test_textures_are_subtle_two_tone_patterns(background: str) -> None:
    plain, shade = BACKGROUND_COLOURS[background], drawing.texture_colour(background)
    assert 20 <= distance(plain, shade) <= 60
    for texture in TEXTURES:
        pixels = drawing.background_array(background, texture, SIZE).reshape(-1, 3)
        colours = {tuple(int(c) for c in colour) for colour in np.unique(pixels, axis=0)}
        is_shade = has_colour(pixels, shade)
        if texture == "plain":
            assert colours == {plain}
        else:
            assert colours == {plain, shade}
            assert 0.02 <= is_shade.mean() <= 0.3


@pytest.mark.parametrize("image_size", [32, 48, 64, 100, 128, 256])
def test_objects_stay_in_their_box_and_never_touch_at_any_image_size(image_size: int) -> None:
    placed = []
    for position in POSITIONS:
        for obj in all_objects(position, "large"):
            scene = Scene("white", "plain", (obj,))
            mask = masks(scene, image_size)[0]
            x0, y0, x1, y1 = bounding_box(obj, image_size)
            assert min(x0, y0) >= 0 and max(x1, y1) < image_size
            inside = np.zeros_like(mask)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            assert mask.any() and not (mask & ~inside).any(), (obj, image_size)
            placed.append((position, mask))
    for (first, mask), (second, other) in itertools.product(placed, repeat=2):
        if first != second:  # at least one pixel apart: touching would merge them
            assert not (dilate(mask) & other).any(), (first, second, image_size)


def test_masks_are_exact_disjoint_and_leave_only_background_outside() -> None:
    for scene in SCENES[:120]:
        pixels = render_array(scene)
        object_masks = masks(scene)
        assert len(object_masks) == len(scene.objects)
        covered = np.zeros((SIZE, SIZE), dtype=bool)
        for obj, mask in zip(scene.objects, object_masks, strict=True):
            assert mask.dtype == bool and mask.shape == (SIZE, SIZE) and mask.any()
            assert not (mask & covered).any()
            covered |= mask
            under = pixels[mask]
            is_colour = has_colour(under, OBJECT_COLOURS[obj.colour])
            if obj.shape == "face":  # eyes and mouth are FEATURE_COLOUR, the rest the colour
                is_feature = has_colour(under, FEATURE_COLOUR)
                assert (is_colour | is_feature).all() and is_feature.any()
                assert is_colour.mean() >= 0.6
            else:
                assert is_colour.all(), obj
        outside = pixels[~covered]
        plain = has_colour(outside, BACKGROUND_COLOURS[scene.background])
        texture = has_colour(outside, drawing.texture_colour(scene.background))
        assert (plain | texture).all()


def in_region(position: str, x: float, y: float, n: int) -> bool:
    """Whether a centre of mass (x, y) lies in the third of the image the position names."""
    low, high = n / 3, 2 * n / 3
    middle_x, middle_y = low < x < high, low < y < high
    return {
        "left": x < low and middle_y,
        "right": x > high and middle_y,
        "top": y < low and middle_x,
        "bottom": y > high and middle_x,
        "centre": middle_x and middle_y,
    }[position]


def test_position_sets_the_centre_of_mass_and_size_the_area() -> None:
    for position in POSITIONS:
        for large, small in zip(
            all_objects(position, "large"), all_objects(position, "small"), strict=True
        ):
            for obj in (large, small):
                ys, xs = np.nonzero(masks(Scene("white", "plain", (obj,)))[0])
                assert in_region(position, xs.mean(), ys.mean(), SIZE), (obj, xs.mean(), ys.mean())
            large_area = masks(Scene("white", "plain", (large,)))[0].sum()
            small_area = masks(Scene("white", "plain", (small,)))[0].sum()
            assert large_area >= 2 * small_area, (large, large_area, small_area)


def test_poses_look_different() -> None:
    for obj in all_objects():
        if obj.posable:
            images = {
                render(Scene("white", "plain", (dataclasses.replace(obj, pose=p),))).tobytes()
                for p in POSES[obj.shape]
            }
            assert len(images) == len(POSES[obj.shape])


def test_render_size_and_its_validation() -> None:
    assert render(PAIR).size == (SIZE, SIZE) and render(PAIR).mode == "RGB"
    assert render(PAIR, 128).size == (128, 128)
    assert masks(PAIR, 128)[0].shape == (128, 128)
    for bad in (16, 64.0):
        with pytest.raises(ValueError, match=r"too small.*at least 32 pixels; use size=64"):
            render(PAIR, bad)  # type: ignore[arg-type]


def test_sample_grid_png(tmp_path: Path) -> None:
    """A contact sheet of 16 scenes, for eyeballing; written only to tmp_path."""
    cell = SIZE + 2
    sheet = Image.new("RGB", (4 * cell, 4 * cell), "white")
    for index, scene in enumerate(SCENES[:16]):
        sheet.paste(render(scene), ((index % 4) * cell, (index // 4) * cell))
    path = tmp_path / "toyworld-grid.png"
    sheet.save(path)
    with Image.open(path) as reloaded:
        assert reloaded.size == (4 * cell, 4 * cell)


# ---------------------------------------------------------------------------------------------
# Edits


def edits_to_check(scene: Scene, rng: random.Random) -> list[Edit]:
    """Every attribute edit of the scene and a few of its hundreds of 'add' edits."""
    edits = [edit for edit in possible_edits(scene) if edit.kind != "add"]
    adds = possible_edits(scene, "add")
    return edits + rng.sample(adds, min(4, len(adds)))


def expected_description(scene: Scene, edit: Edit) -> dict[str, object]:
    expected = describe(scene)
    if edit.kind == "add":
        expected["objects"].append(dataclasses.asdict(edit.value))  # type: ignore[arg-type]
    else:
        expected["objects"][edit.object_index][edit.kind] = edit.value
    return expected


def test_each_edit_changes_exactly_its_attribute_and_only_its_pixels() -> None:
    rng = random.Random(0)
    checked: collections.Counter[str] = collections.Counter()
    for scene in [PAIR, SINGLE, *SCENES[:25]]:
        source = render_array(scene)
        for edit in edits_to_check(scene, rng):
            target = apply_edit(scene, edit)
            assert describe(target) == expected_description(scene, edit), edit
            changed = (render_array(target) != source).any(axis=2)
            region = masks(target)[edit.object_index]  # where the object is now ...
            if edit.kind != "add":
                region = region | masks(scene)[edit.object_index]  # ... or was
            assert np.array_equal(region, edit_region(scene, edit))
            assert changed.any(), edit  # the edit is visible ...
            assert not (changed & ~region).any(), edit  # ... and the rest is pixel-identical
            checked[edit.kind] += 1
    assert set(checked) == set(EDIT_KINDS)


def test_edit_ground_truth_is_consistent() -> None:
    for scene in SCENES[:30]:
        for kind in EDIT_KINDS:
            for edit in possible_edits(scene, kind)[:2]:
                truth = edit_ground_truth(scene, edit)
                assert truth.target == apply_edit(scene, edit)
                assert truth.text == edit_text(scene, edit) == canonical_caption(truth.target)
                assert truth.text != canonical_caption(scene)
                assert truth.source_image.tobytes() == render(scene).tobytes()
                assert truth.target_image.tobytes() == render(truth.target).tobytes()
                assert np.array_equal(truth.region, edit_region(scene, edit))
                for index, (before, after) in enumerate(
                    zip(truth.source_masks, truth.target_masks, strict=False)
                ):
                    if index != edit.object_index:  # the other object keeps its mask
                        assert np.array_equal(before, after)
                assert truth.region[truth.target_masks[edit.object_index]].all()


def test_edit_text_is_what_a_user_would_type() -> None:
    assert edit_text(PAIR, Edit("colour", 0, "green")).startswith(
        "a large green circle on the left"
    )
    assert "stick figure with its arms down" in edit_text(PAIR, Edit("pose", 1, "arms down"))
    assert (
        edit_text(SINGLE, Edit("position", 0, "centre"))
        == "a large red circle in the centre on a white background"
    )
    assert edit_text(
        SINGLE, Edit("add", 1, SceneObject("face", "yellow", "small", "top", "smiling"))
    ) == (
        "a large red circle on the left and a small yellow smiling face at the top "
        "on a white background"
    )


def test_sample_edit_is_valid_deterministic_and_covers_every_kind() -> None:
    kinds = set()
    for seed, scene in enumerate(SCENES):
        edit = sample_edit(scene, seed)
        assert edit == sample_edit(scene, random.Random(seed))
        apply_edit(scene, edit)  # never raises
        kinds.add(edit.kind)
    assert kinds == set(EDIT_KINDS)


SMILEY = SceneObject("face", "yellow", "small", "top", "smiling")


@pytest.mark.parametrize(
    ("scene", "edit", "message"),
    [
        (
            PAIR,
            Edit("colour", 2, "blue"),
            r"Edit.object_index 2 is out of range: the scene has 2 object\(s\); use 0 to 1",
        ),
        (PAIR, Edit("colour", True, "blue"), r"Edit.object_index True is out of range"),
        (
            PAIR,
            Edit("colour", 0, "pink"),
            r"Edit.value 'pink' is not valid; a colour edit takes one of: red, orange",
        ),
        (
            PAIR,
            Edit("colour", 0, "red"),
            r"object 0 already has colour 'red'; a colour edit must change it, use one of: orange",
        ),
        (
            PAIR,
            Edit("size", 0, "medium"),
            r"Edit.value 'medium' is not valid; a size edit takes one of: small, large",
        ),
        (
            PAIR,
            Edit("shape", 1, "circle"),
            r"cannot change object 1, a stick figure: .*use a 'pose' edit instead",
        ),
        (
            PAIR,
            Edit("shape", 0, "face"),
            r"Edit.value 'face' is not valid; a shape edit takes one of: circle, square, "
            r"triangle, star",
        ),
        (
            PAIR,
            Edit("pose", 0, "arms up"),
            r"needs a posable object, but object 0 is a circle; "
            r"pose edits apply to: stick figure, face",
        ),
        (
            PAIR,
            Edit("pose", 1, "smiling"),
            r"Edit.value 'smiling' is not valid; a pose edit takes one of: arms up, arms down",
        ),
        (PAIR, Edit("pose", 1, "arms up"), r"already has pose 'arms up'.*use one of: arms down"),
        (
            PAIR,
            Edit("position", 0, "right"),
            r"'right': that position is taken by object 1; "
            r"move object 0 to a free position: top, bottom, centre",
        ),
        (PAIR, Edit("position", 0, "left"), r"already has position 'left'"),
        (
            PAIR,
            Edit("position", 0, "middle"),
            r"Edit.value 'middle' is not valid; a position edit takes one of: left, right",
        ),
        (
            PAIR,
            Edit("add", 2, SMILEY),
            r"Edit.kind 'add' needs a scene with fewer than 2 objects, but this one has 2",
        ),
        (
            SINGLE,
            Edit("add", 0, SMILEY),
            r"Edit.object_index 0 is not valid for an 'add' edit: .* use 1",
        ),
        (
            SINGLE,
            Edit("add", 1, "face"),
            r"Edit.value 'face' is not valid for an 'add' edit; use a SceneObject",
        ),
        (
            SINGLE,
            Edit("add", 1, RED_CIRCLE),
            r"position 'left' is taken; .*free position: right, top, bottom, centre",
        ),
    ],
)
def test_invalid_edits_raise_a_helpful_value_error(scene: Scene, edit: Edit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_edit(scene, edit)


def test_unknown_edit_kind_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"Edit.kind 'recolour' is not valid; use one of: colour, shape"
    ):
        Edit("recolour", 0, "red")
    with pytest.raises(ValueError, match=r"kind 'recolour' is not valid"):
        possible_edits(PAIR, "recolour")


def test_possible_edits_respect_the_object_kinds() -> None:
    kinds = collections.Counter(edit.kind for edit in possible_edits(PAIR))
    # circle: 5 colours, 1 size, 3 shapes, 3 positions; stick figure: 5, 1, 0 shapes, 1 pose, 3
    assert kinds == {"colour": 10, "size": 2, "shape": 3, "pose": 1, "position": 6}
    adds = possible_edits(SINGLE, "add")
    assert len(adds) == 4 * (4 + 2 * 2) * len(OBJECT_COLOURS) * len(SIZES)
    assert all(edit.object_index == 1 for edit in adds)
