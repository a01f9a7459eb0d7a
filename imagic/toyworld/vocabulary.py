"""The toy world's closed vocabulary: attribute values, their colours and the words captions use.

Everything a caption can say is listed in this module, for two reasons: a tokenizer built from
`vocabulary()` never meets an unknown word, and the quality benchmark can check an edit against
exact attribute values instead of parsing free text. The first word or phrase of every synonym
tuple is the canonical one (used by `canonical_caption`); the others exist only so that a model
trained on paraphrases does not learn one template by heart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

RGB = tuple[int, int, int]

# Six saturated, well-separated hues. None is dark, grey or pastel, so an object never
# disappears into a background or texture (tests check a minimum RGB distance of 90).
OBJECT_COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "orange": (245, 130, 20),
    "yellow": (240, 225, 40),
    "green": (30, 170, 60),
    "blue": (30, 90, 220),
    "purple": (140, 50, 190),
}

# Background names never reuse an object colour's name, so "red" always means one RGB value and
# "a red circle on a red background" cannot happen.
BACKGROUND_COLOURS: dict[str, RGB] = {
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (25, 25, 25),
    "pink": (250, 200, 210),
    "brown": (110, 70, 40),
    "navy": (25, 35, 90),
}

# The eyes and mouth of a face. Black is no object colour, so feature pixels are unambiguous.
FEATURE_COLOUR: RGB = (0, 0, 0)

# How far a texture's stripes or dots are from the background colour: visible but subtle,
# lighter on dark backgrounds and darker on light ones.
TEXTURE_SHIFT = 28

TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")

RIGID_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

# The non-rigid objects, mirroring Imagic's pose and expression edits: the same object keeps its
# identity (shape, colour, size, position) while its pose changes.
POSES: dict[str, tuple[str, ...]] = {
    "stick figure": ("arms up", "arms down"),
    "face": ("smiling", "frowning"),
}
POSABLE_SHAPES: tuple[str, ...] = tuple(POSES)
SHAPES: tuple[str, ...] = RIGID_SHAPES + POSABLE_SHAPES

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
MAX_OBJECTS = 2

# Synonyms, canonical first. Shapes and colours have none: they are the attributes the benchmark
# reads back most often, so each has exactly one name.
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "large": ("large", "big"),
}
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}
# An empty phrase means "say nothing": a plain background is the unmarked case.
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("", "plain"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
}
# Poses of a face are adjectives before the noun ("a smiling face"); poses of a stick figure
# are phrases after it ("a stick figure with its arms up").
POSE_BEFORE_NOUN: dict[str, tuple[str, ...]] = {
    "smiling": ("smiling", "happy"),
    "frowning": ("frowning", "sad"),
}
POSE_AFTER_NOUN: dict[str, tuple[str, ...]] = {
    "arms up": ("with its arms up", "with raised arms"),
    "arms down": ("with its arms down", "with lowered arms"),
}


@dataclass(frozen=True)
class CaptionTemplate:
    """One way of phrasing a scene.

    `obj` phrases one object from {article}, {noun} (size, colour, shape and pose) and {where}
    (the position phrase); the phrases are joined with `join` and put into `sentence` as
    {objects}, next to {background} (texture and colour), {bg_article} and {there}
    ("there is" or "there are").
    """

    obj: str
    join: str
    sentence: str


_NOUN_FIRST = "{article} {noun} {where}"  # "a large red circle on the left"
_PLACE_FIRST = "{where}, {article} {noun}"  # "on the left, a large red circle"

# Template 0 is the canonical caption. Examples: one large red circle on the left, plain white.
TEMPLATES: tuple[CaptionTemplate, ...] = (
    # a large red circle on the left on a white background
    CaptionTemplate(_NOUN_FIRST, " and ", "{objects} on {bg_article} {background} background"),
    # a white background with a large red circle on the left
    CaptionTemplate(_NOUN_FIRST, " and ", "{bg_article} {background} background with {objects}"),
    # on the left, a large red circle; the background is white
    CaptionTemplate(_PLACE_FIRST, "; ", "{objects}; the background is {background}"),
    # a picture of a large red circle on the left against a white background
    CaptionTemplate(
        _NOUN_FIRST, " and ", "a picture of {objects} against {bg_article} {background} background"
    ),
    # there is a large red circle on the left, and the background is white
    CaptionTemplate(_NOUN_FIRST, " and ", "{there} {objects}, and the background is {background}"),
)
THERE = {1: "there is", 2: "there are"}

_WORD = re.compile(r"[a-z]+")


def caption_words(text: str) -> list[str]:
    """The words of a caption: maximal runs of the letters a-z, lower-cased.

    Captions hold only lower-case words, spaces, commas and semicolons, so this is the whole
    tokenisation rule a later tokenizer needs.
    """
    return _WORD.findall(text.lower())


def article(next_word: str) -> str:
    """'an' before a vowel, else 'a' (enough for this closed vocabulary: no 'hour', no 'unit')."""
    return "an" if next_word[:1] in "aeiou" else "a"


def _phrase_tables() -> list[tuple[str, ...]]:
    return [
        *SIZE_WORDS.values(),
        *POSITION_PHRASES.values(),
        *TEXTURE_WORDS.values(),
        *POSE_BEFORE_NOUN.values(),
        *POSE_AFTER_NOUN.values(),
        tuple(OBJECT_COLOURS),
        tuple(BACKGROUND_COLOURS),
        SHAPES,
        tuple(THERE.values()),
    ]


def _template_words() -> set[str]:
    words: set[str] = set()
    for template in TEMPLATES:
        for text in (template.obj, template.join, template.sentence):
            words.update(caption_words(re.sub(r"\{\w+\}", " ", text)))
    return words


def _article_words() -> set[str]:
    """Articles that can actually occur: before a size word, or before a background phrase."""
    first_words = [word for words in SIZE_WORDS.values() for word in words]
    first_words += [word for words in TEXTURE_WORDS.values() for word in words if word]
    first_words += list(BACKGROUND_COLOURS)
    return {article(word) for word in first_words}


@cache
def _vocabulary() -> tuple[str, ...]:
    words = _template_words() | _article_words()
    for table in _phrase_tables():
        for phrase in table:
            words.update(caption_words(phrase))
    return tuple(sorted(words))


def vocabulary() -> list[str]:
    """Every word any caption can contain, sorted; `caption_words` splits captions into them."""
    return list(_vocabulary())
