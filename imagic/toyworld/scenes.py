"""Seeded procedural scenes with exact captions, object masks and ground-truth edits.

A toy world where every edit has a known right answer: a scene is a background (colour and
texture) with one or two objects, each with a shape, colour, size and position, and a pose for
the non-rigid kinds (a stick figure with its arms up or down, a face smiling or frowning, like
the paper's pose and expression edits). From the attributes alone the module renders the image,
the objects' masks and captions; applying an `Edit` gives the target scene, so the expected
edited image, its caption and the region allowed to change are exact, not estimated.

    scene = sample_scene(7)
    image = render(scene)                        # 64 x 64 RGB, same bytes on every machine
    text = caption(scene, rng=random.Random(0))  # a random paraphrase, for training
    edit = sample_edit(scene, random.Random(0))
    truth = edit_ground_truth(scene, edit)       # target image, masks, caption, region

Attribute values and caption words live in `imagic.toyworld.vocabulary`; pixel geometry in
`imagic.toyworld.drawing`. Everything here is deterministic given its inputs.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from imagic.toyworld import drawing
from imagic.toyworld.vocabulary import (
    BACKGROUND_COLOURS,
    FEATURE_COLOUR,
    MAX_OBJECTS,
    OBJECT_COLOURS,
    POSABLE_SHAPES,
    POSE_AFTER_NOUN,
    POSE_BEFORE_NOUN,
    POSES,
    POSITION_PHRASES,
    POSITIONS,
    RIGID_SHAPES,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    TEMPLATES,
    TEXTURE_WORDS,
    TEXTURES,
    THERE,
    CaptionTemplate,
    article,
    caption_words,
    vocabulary,
)

__all__ = [
    "DEFAULT_SIZE",
    "EDIT_KINDS",
    "Edit",
    "EditGroundTruth",
    "Scene",
    "SceneObject",
    "apply_edit",
    "bounding_box",
    "canonical_caption",
    "caption",
    "caption_words",
    "describe",
    "edit_ground_truth",
    "edit_region",
    "edit_text",
    "masks",
    "possible_edits",
    "render",
    "render_array",
    "sample_edit",
    "sample_object",
    "sample_scene",
    "scene_from_description",
    "vocabulary",
]

DEFAULT_SIZE = 64
EDIT_KINDS: tuple[str, ...] = ("colour", "shape", "size", "position", "pose", "add")


def _listing(values: Collection[str]) -> str:
    return ", ".join(values)


def _require(field: str, value: object, allowed: Collection[str], fix: str = "") -> None:
    """Raise a ValueError naming the field, the bad value and the allowed values."""
    if not isinstance(value, str) or value not in allowed:
        hint = fix or f"use one of: {_listing(allowed)}"
        raise ValueError(f"{field} {value!r} is not valid; {hint}")


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class SceneObject:
    """One object. `pose` is None for rigid shapes and one of POSES[shape] for posable ones."""

    shape: str
    colour: str
    size: str
    position: str
    pose: str | None = None

    def __post_init__(self) -> None:
        _require("SceneObject.shape", self.shape, SHAPES)
        _require("SceneObject.colour", self.colour, OBJECT_COLOURS)
        _require("SceneObject.size", self.size, SIZES)
        _require("SceneObject.position", self.position, POSITIONS)
        self._check_pose()

    @property
    def posable(self) -> bool:
        """True for the non-rigid shapes (stick figure, face), the only ones with a pose."""
        return self.shape in POSES

    def _check_pose(self) -> None:
        if self.posable:
            poses = POSES[self.shape]
            fix = f"a {self.shape} needs one of the poses: {_listing(poses)}"
            _require("SceneObject.pose", self.pose, poses, fix)
        elif self.pose is not None:
            raise ValueError(
                f"SceneObject.pose {self.pose!r} is not valid for a {self.shape}, which has no "
                f"pose; leave pose=None, or use a posable shape: {_listing(POSABLE_SHAPES)}"
            )


@dataclass(frozen=True)
class Scene:
    """A background colour and texture with one or two objects at different positions.

    Objects are a tuple (a list is converted) so scenes are hashable and comparable; their order
    is the order captions mention them in and the `object_index` edits refer to.
    """

    background: str
    texture: str
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        _require("Scene.background", self.background, BACKGROUND_COLOURS)
        _require("Scene.texture", self.texture, TEXTURES)
        object.__setattr__(self, "objects", tuple(self.objects))
        self._check_objects()

    def _check_objects(self) -> None:
        count = len(self.objects)
        if not 1 <= count <= MAX_OBJECTS:
            raise ValueError(
                f"Scene.objects has {count} objects; a scene holds 1 to {MAX_OBJECTS} objects"
            )
        for index, obj in enumerate(self.objects):
            if not isinstance(obj, SceneObject):
                raise ValueError(
                    f"Scene.objects[{index}] is a {type(obj).__name__}; use a SceneObject"
                )
        seen: dict[str, int] = {}
        for index, obj in enumerate(self.objects):
            if obj.position in seen:
                raise ValueError(
                    f"Scene.objects: objects {seen[obj.position]} and {index} are both at "
                    f"{obj.position!r}; two objects never share a position, so move one to "
                    f"another of: {_listing(POSITIONS)}"
                )
            seen[obj.position] = index

    def free_positions(self) -> list[str]:
        """Positions no object occupies, in POSITIONS order: where a moved or added object fits."""
        taken = {obj.position for obj in self.objects}
        return [position for position in POSITIONS if position not in taken]


def _as_rng(rng: random.Random | int) -> random.Random:
    """Accept a seed for convenience; a Random instance is used (and advanced) as it is."""
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    raise TypeError(f"rng must be a random.Random or an int seed, not {type(rng).__name__}")


def sample_object(rng: random.Random | int, position: str) -> SceneObject:
    """A random object at `position`: each shape, colour, size and pose equally likely."""
    rng = _as_rng(rng)
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(OBJECT_COLOURS))
    size = rng.choice(SIZES)
    pose = rng.choice(POSES[shape]) if shape in POSES else None
    return SceneObject(shape, colour, size, position, pose)


def sample_scene(rng: random.Random | int) -> Scene:
    """A random scene: one or two objects (equally likely) at distinct random positions.

    The same seed (or a Random in the same state) gives the same scene on every machine.
    """
    rng = _as_rng(rng)
    count = rng.randint(1, MAX_OBJECTS)
    positions = rng.sample(POSITIONS, count)
    objects = tuple(sample_object(rng, position) for position in positions)
    return Scene(rng.choice(list(BACKGROUND_COLOURS)), rng.choice(TEXTURES), objects)


def describe(scene: Scene) -> dict[str, Any]:
    """The scene's attributes as plain JSON-ready data (see `scene_from_description`)."""
    return {
        "background": scene.background,
        "texture": scene.texture,
        "objects": [dataclasses.asdict(obj) for obj in scene.objects],
    }


def scene_from_description(description: dict[str, Any]) -> Scene:
    """The inverse of `describe`, so datasets can store scenes as JSON."""
    objects = tuple(SceneObject(**obj) for obj in description["objects"])
    return Scene(description["background"], description["texture"], objects)


# ---------------------------------------------------------------------------------------------
# Pixels


def bounding_box(obj: SceneObject, size: int = DEFAULT_SIZE) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive: the box the object's mask always lies in."""
    drawing.check_image_size(size)
    return drawing.bounding_box(obj.position, obj.size, size)


def _layers(obj: SceneObject, size: int) -> tuple[np.ndarray, np.ndarray]:
    return drawing.draw_object(obj.shape, obj.pose, obj.size, obj.position, size)


def render_array(scene: Scene, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The scene as a (size, size, 3) uint8 array; see `render`."""
    drawing.check_image_size(size)
    pixels = drawing.background_array(scene.background, scene.texture, size)
    for obj in scene.objects:
        silhouette, features = _layers(obj, size)
        pixels[silhouette] = OBJECT_COLOURS[obj.colour]
        pixels[features] = FEATURE_COLOUR
    return pixels


def render(scene: Scene, size: int = DEFAULT_SIZE) -> Image.Image:
    """The scene as a size x size RGB image, without anti-aliasing so masks are exact.

    Every pixel is the background colour, the texture colour, an object's colour or (a face's
    eyes and mouth) FEATURE_COLOUR: no blended pixels.
    """
    return Image.fromarray(render_array(scene, size), "RGB")


def masks(scene: Scene, size: int = DEFAULT_SIZE) -> list[np.ndarray]:
    """One boolean (size, size) mask per object, in `scene.objects` order.

    A mask is the object's whole silhouette. Under it every pixel has the object's colour,
    except a face's eyes and mouth (FEATURE_COLOUR, at most a fifth of it): the benchmark
    needs the region an object occupies, and a face's features belong to the face. Masks are
    disjoint and at least one pixel apart.
    """
    drawing.check_image_size(size)
    return [_layers(obj, size)[0] for obj in scene.objects]


# ---------------------------------------------------------------------------------------------
# Captions


class _Words:
    """Picks words: the canonical (first) option without an rng, a random one with it."""

    def __init__(self, rng: random.Random | int | None) -> None:
        self.rng = None if rng is None else _as_rng(rng)

    def pick(self, options: Sequence[str]) -> str:
        return options[0] if self.rng is None else self.rng.choice(options)

    def style(self, style: int | None) -> int:
        if style is None:
            return 0 if self.rng is None else self.rng.randrange(len(TEMPLATES))
        if not isinstance(style, int) or not 0 <= style < len(TEMPLATES):
            raise ValueError(
                f"style {style!r} is not valid; use 0 to {len(TEMPLATES) - 1}, or None"
            )
        return style

    def order(self, objects: Sequence[SceneObject]) -> list[SceneObject]:
        ordered = list(objects)
        if self.rng is not None:
            self.rng.shuffle(ordered)
        return ordered


def _noun_phrase(obj: SceneObject, words: _Words) -> str:
    """'large red circle', 'big green smiling face', 'small blue stick figure with its arms up'."""
    parts = [words.pick(SIZE_WORDS[obj.size]), obj.colour]
    if obj.pose in POSE_BEFORE_NOUN:
        parts.append(words.pick(POSE_BEFORE_NOUN[obj.pose]))
    parts.append(obj.shape)
    if obj.pose in POSE_AFTER_NOUN:
        parts.append(words.pick(POSE_AFTER_NOUN[obj.pose]))
    return " ".join(parts)


def _object_phrase(template: CaptionTemplate, obj: SceneObject, words: _Words) -> str:
    noun = _noun_phrase(obj, words)
    where = words.pick(POSITION_PHRASES[obj.position])
    return template.obj.format(article=article(noun), noun=noun, where=where)


def _background_phrase(scene: Scene, words: _Words) -> str:
    """'white', 'striped grey', 'plain navy' (a plain texture is usually left unsaid)."""
    return " ".join(
        word for word in (words.pick(TEXTURE_WORDS[scene.texture]), scene.background) if word
    )


def caption(scene: Scene, rng: random.Random | int | None = None, style: int | None = None) -> str:
    """A plain-English caption naming every attribute of the scene.

    Without `rng` the words are the canonical ones and the objects keep their order; with it,
    synonyms ('big' for 'large', 'in the middle' for 'in the centre') and the object order are
    random. `style` picks one of the TEMPLATES (0 to 4); None means 0 without `rng` and a random
    template with it. Captions are lower case; `vocabulary()` holds all their words.
    """
    words = _Words(rng)
    template = TEMPLATES[words.style(style)]
    objects = words.order(scene.objects)
    phrases = [_object_phrase(template, obj, words) for obj in objects]
    background = _background_phrase(scene, words)
    return template.sentence.format(
        objects=template.join.join(phrases),
        background=background,
        bg_article=article(background),
        there=THERE[len(objects)],
    )


def canonical_caption(scene: Scene) -> str:
    """The one caption a user would type: template 0, canonical words, objects in order.

    'a large red circle on the left on a white background'
    """
    return caption(scene)


# ---------------------------------------------------------------------------------------------
# Edits


@dataclass(frozen=True)
class Edit:
    """One change to one object.

    `kind` is one of EDIT_KINDS. For colour, shape, size, position and pose edits, `value` is
    the new attribute value of object `object_index`. For 'add', `value` is the new SceneObject
    and `object_index` the index it gets: len(scene.objects), since it is appended.
    """

    kind: str
    object_index: int
    value: str | SceneObject

    def __post_init__(self) -> None:
        _require("Edit.kind", self.kind, EDIT_KINDS)


def _target(scene: Scene, edit: Edit) -> SceneObject:
    count = len(scene.objects)
    index = edit.object_index
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise ValueError(
            f"Edit.object_index {index!r} is out of range: the scene has {count} object(s); "
            f"use 0 to {count - 1}"
        )
    return scene.objects[index]


def _changed(scene: Scene, edit: Edit, field: str, allowed: Collection[str]) -> Scene:
    """The scene with `field` of the target object set to `edit.value`, which must be new."""
    obj = _target(scene, edit)
    _require(
        "Edit.value", edit.value, allowed, f"a {edit.kind} edit takes one of: {_listing(allowed)}"
    )
    current = getattr(obj, field)
    if edit.value == current:
        others = [value for value in allowed if value != current]
        raise ValueError(
            f"Edit.value {edit.value!r}: object {edit.object_index} already has {field} "
            f"{current!r}; a {edit.kind} edit must change it, use one of: {_listing(others)}"
        )
    return _with_object(scene, edit.object_index, dataclasses.replace(obj, **{field: edit.value}))


def _with_object(scene: Scene, index: int, obj: SceneObject) -> Scene:
    objects = list(scene.objects)
    objects[index] = obj
    return dataclasses.replace(scene, objects=tuple(objects))


def _edit_colour(scene: Scene, edit: Edit) -> Scene:
    return _changed(scene, edit, "colour", list(OBJECT_COLOURS))


def _edit_size(scene: Scene, edit: Edit) -> Scene:
    return _changed(scene, edit, "size", SIZES)


def _edit_shape(scene: Scene, edit: Edit) -> Scene:
    """Rigid shapes only: turning a circle into a stick figure would have to invent a pose."""
    obj = _target(scene, edit)
    if obj.posable:
        raise ValueError(
            f"Edit.kind 'shape' cannot change object {edit.object_index}, a {obj.shape}: shape "
            f"edits swap rigid shapes ({_listing(RIGID_SHAPES)}) only; use a 'pose' edit instead"
        )
    return _changed(scene, edit, "shape", RIGID_SHAPES)


def _edit_pose(scene: Scene, edit: Edit) -> Scene:
    obj = _target(scene, edit)
    if not obj.posable:
        raise ValueError(
            f"Edit.kind 'pose' needs a posable object, but object {edit.object_index} is a "
            f"{obj.shape}; pose edits apply to: {_listing(POSABLE_SHAPES)}"
        )
    return _changed(scene, edit, "pose", POSES[obj.shape])


def _edit_position(scene: Scene, edit: Edit) -> Scene:
    _target(scene, edit)  # a bad index is reported before anything about the position
    for index, other in enumerate(scene.objects):
        if index != edit.object_index and other.position == edit.value:
            raise ValueError(
                f"Edit.value {edit.value!r}: that position is taken by object {index}; move "
                f"object {edit.object_index} to a free position: {_listing(scene.free_positions())}"
            )
    return _changed(scene, edit, "position", POSITIONS)


def _edit_add(scene: Scene, edit: Edit) -> Scene:
    count = len(scene.objects)
    if count >= MAX_OBJECTS:
        raise ValueError(
            f"Edit.kind 'add' needs a scene with fewer than {MAX_OBJECTS} objects, but this one "
            f"has {count}; edit an existing object instead"
        )
    if edit.object_index != count:
        raise ValueError(
            f"Edit.object_index {edit.object_index!r} is not valid for an 'add' edit: the new "
            f"object is appended, so use {count}"
        )
    if not isinstance(edit.value, SceneObject):
        raise ValueError(
            f"Edit.value {edit.value!r} is not valid for an 'add' edit; use a SceneObject"
        )
    if edit.value.position not in scene.free_positions():
        raise ValueError(
            f"Edit.value.position {edit.value.position!r} is taken; place the new object at a "
            f"free position: {_listing(scene.free_positions())}"
        )
    return dataclasses.replace(scene, objects=(*scene.objects, edit.value))


_EDITORS: dict[str, Callable[[Scene, Edit], Scene]] = {
    "colour": _edit_colour,
    "shape": _edit_shape,
    "size": _edit_size,
    "position": _edit_position,
    "pose": _edit_pose,
    "add": _edit_add,
}


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The scene after the edit; only the edited (or added) object differs.

    Raises ValueError, naming the field, the value and what to use instead, for an edit that is
    impossible (out-of-range index, unknown value, pose edit of a rigid object, position taken,
    adding to a full scene) or that would change nothing.
    """
    return _EDITORS[edit.kind](scene, edit)


def edit_text(scene: Scene, edit: Edit) -> str:
    """The target text a user would type for this edit: the edited scene's canonical caption."""
    return canonical_caption(apply_edit(scene, edit))


def _add_edits(scene: Scene) -> list[Edit]:
    index = len(scene.objects)
    edits = []
    for position in scene.free_positions():
        for shape in SHAPES:
            for pose in POSES.get(shape, (None,)):
                for colour in OBJECT_COLOURS:
                    for size in SIZES:
                        obj = SceneObject(shape, colour, size, position, pose)
                        edits.append(Edit("add", index, obj))
    return edits


def _edit_values(scene: Scene, obj: SceneObject, kind: str) -> Sequence[str]:
    """The values an attribute edit of `kind` may give `obj`, its current value included."""
    if kind == "colour":
        return list(OBJECT_COLOURS)
    if kind == "size":
        return SIZES
    if kind == "shape":
        return () if obj.posable else RIGID_SHAPES
    if kind == "pose":
        return POSES.get(obj.shape, ())
    return scene.free_positions()


def _attribute_edits(scene: Scene, kind: str) -> list[Edit]:
    edits = []
    for index, obj in enumerate(scene.objects):
        current = getattr(obj, kind)  # edit kinds are named after the attributes they change
        values = _edit_values(scene, obj, kind)
        edits += [Edit(kind, index, value) for value in values if value != current]
    return edits


def possible_edits(scene: Scene, kind: str | None = None) -> list[Edit]:
    """Every valid edit of the scene (of one kind, if given), in a fixed order."""
    if kind is None:
        return [edit for each in EDIT_KINDS for edit in possible_edits(scene, each)]
    _require("kind", kind, EDIT_KINDS)
    if kind == "add":
        return _add_edits(scene) if len(scene.objects) < MAX_OBJECTS else []
    return _attribute_edits(scene, kind)


def sample_edit(scene: Scene, rng: random.Random | int) -> Edit:
    """A random valid edit: first a kind (uniform over the kinds this scene allows), then a value.

    Choosing the kind first keeps 'add', which has hundreds of variants, from crowding out the
    attribute edits.
    """
    rng = _as_rng(rng)
    kinds = [kind for kind in EDIT_KINDS if _allows(scene, kind)]
    return rng.choice(possible_edits(scene, rng.choice(kinds)))


def _allows(scene: Scene, kind: str) -> bool:
    """Whether the scene has any edit of this kind, without listing hundreds of 'add' edits."""
    if kind == "add":
        return len(scene.objects) < MAX_OBJECTS
    return bool(_attribute_edits(scene, kind))


@dataclass(frozen=True, eq=False)
class EditGroundTruth:
    """Everything the quality benchmark needs to score one edit of one scene.

    `region` is where pixels may change: the edited object's mask before and after the edit
    (only after, for 'add'). Outside it, the target image equals the source image exactly: the
    ground truth of "the background and the other objects are preserved".
    """

    source: Scene
    edit: Edit
    target: Scene
    text: str
    source_image: Image.Image
    target_image: Image.Image
    source_masks: tuple[np.ndarray, ...]
    target_masks: tuple[np.ndarray, ...]
    region: np.ndarray


def edit_region(scene: Scene, edit: Edit, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of the pixels the edit may change (see EditGroundTruth)."""
    target = apply_edit(scene, edit)
    return _region(scene, target, edit.object_index, size)


def _region(source: Scene, target: Scene, index: int, size: int) -> np.ndarray:
    after = masks(target, size)[index]
    if index >= len(source.objects):
        return after
    return masks(source, size)[index] | after


def edit_ground_truth(scene: Scene, edit: Edit, size: int = DEFAULT_SIZE) -> EditGroundTruth:
    """The expected result of `edit` on `scene`: target scene, caption, images, masks, region."""
    target = apply_edit(scene, edit)
    return EditGroundTruth(
        source=scene,
        edit=edit,
        target=target,
        text=canonical_caption(target),
        source_image=render(scene, size),
        target_image=render(target, size),
        source_masks=tuple(masks(scene, size)),
        target_masks=tuple(masks(target, size)),
        region=_region(scene, target, edit.object_index, size),
    )
