"""A CLIP tokenizer for the toy vocabulary, built offline: every caption word is one token.

The toy text-to-image model is trained from scratch, so its tokenizer can be made to fit its
closed vocabulary exactly instead of reusing CLIP's 49k-token one: one token per word keeps the
text encoder tiny and makes every caption a short sequence (at most 38 tokens with the start
and end tokens, so `MODEL_MAX_LENGTH` is 40). The files are in CLIP's own BPE format
(`vocab.json` + `merges.txt`), so `transformers.CLIPTokenizer` and every Stable Diffusion code
path read them unchanged, and nothing is downloaded.

The merges are learned by running byte-pair encoding on the vocabulary itself until each word
is a single symbol; applying learned merges in rank order re-creates exactly the segmentation
learned, which is what makes each word one token (the tests check every word). The vocabulary
also keeps CLIP's 256-symbol byte alphabet, so any text still encodes (an unknown word becomes
single characters, whose embeddings the model never trained): `unknown_words` lists such words,
so callers can warn before the model silently ignores them.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from imagic.clip_bpe import byte_level_alphabet
from imagic.toyworld.vocabulary import vocabulary

if TYPE_CHECKING:  # transformers is heavy: imported only when a tokenizer is really built
    from transformers import CLIPTokenizer

MODEL_MAX_LENGTH = 40
"""Tokens per prompt, start and end tokens included: the longest caption has 36 words."""

PUNCTUATION: tuple[str, ...] = (",", ";")
"""Punctuation captions contain; CLIP's pre-tokenizer splits it off as separate tokens."""

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
MERGES_HEADER = "#version: 0.2"

# Like CLIP's pre-tokenizer: runs of letters, single digits, runs of other non-space symbols.
_PIECE = re.compile(r"[^\W\d_]+|\d|[^\s\w]+|_+")


def _symbols(word: str) -> tuple[str, ...]:
    """A word as BPE starts it: one symbol per character, the last one marked end-of-word."""
    return (*word[:-1], word[-1] + END_OF_WORD)


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Merge every non-overlapping occurrence of `pair`, left to right (as BPE encoding does)."""
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges, in rank order, that turn each of `words` into a single symbol.

    Standard BPE training run to completion: repeatedly merge the most frequent adjacent pair
    (ties broken alphabetically, so the result never depends on dict or set order).
    """
    segments = {word: _symbols(word) for word in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols in segments.values():
            counts.update(itertools.pairwise(symbols))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        segments = {word: _merge_pair(symbols, best) for word, symbols in segments.items()}


def token_words() -> list[str]:
    """Everything that is one token: the caption words and the punctuation captions use."""
    return [*vocabulary(), *PUNCTUATION]


@cache
def _tokenizer_tables() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    merges = learn_merges(token_words())
    alphabet = byte_level_alphabet()
    vocab: dict[str, int] = {}
    for symbol in [*alphabet, *(char + END_OF_WORD for char in alphabet)]:
        vocab[symbol] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in (BOS_TOKEN, EOS_TOKEN):
        vocab[special] = len(vocab)
    return tuple(vocab.items()), tuple(merges)


def tokenizer_vocab() -> dict[str, int]:
    """Token -> id: the byte alphabet, its end-of-word forms, every merge result, then specials."""
    return dict(_tokenizer_tables()[0])


def tokenizer_merges() -> list[tuple[str, str]]:
    """The BPE merges in rank order."""
    return list(_tokenizer_tables()[1])


def write_tokenizer_files(folder: str | Path) -> tuple[Path, Path]:
    """Write `vocab.json` and `merges.txt` (CLIP's format) into `folder`; return their paths.

    Also written next to a saved pipeline's tokenizer, so transformers versions that read these
    files (rather than `tokenizer.json`) load the same tokenizer.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = target / VOCAB_FILE, target / MERGES_FILE
    vocab_file.write_text(json.dumps(tokenizer_vocab(), ensure_ascii=False), encoding="utf-8")
    lines = [MERGES_HEADER, *(f"{left} {right}" for left, right in tokenizer_merges())]
    merges_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_toy_tokenizer(model_max_length: int = MODEL_MAX_LENGTH) -> CLIPTokenizer:
    """A `CLIPTokenizer` over the toy vocabulary; prompts pad to `model_max_length` tokens."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = write_tokenizer_files(folder)
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            model_max_length=model_max_length,
            padding_side="right",
        )


def unknown_words(text: str) -> list[str]:
    """Words (and symbols) of `text` outside the toy vocabulary, once each, in order of use.

    Split like CLIP's pre-tokenizer (lower-cased letter runs, digits, other symbols), so what
    is listed is exactly what the toy model would see as unfamiliar characters.
    """
    known = set(token_words())
    unknown: list[str] = []
    for piece in _PIECE.findall(text.lower()):
        if piece not in known and piece not in unknown:
            unknown.append(piece)
    return unknown


def unknown_words_message(words: Sequence[str]) -> str:
    """The warning shown for a text with unknown words: what they are and what to use."""
    listed = ", ".join(repr(word) for word in words)
    return (
        f"the toy model does not know {len(words)} word(s) of this text: {listed}. It was "
        "trained only on toy-world captions, so it ignores them; use the words of "
        "imagic.toyworld.vocabulary.vocabulary(), e.g. 'a large red circle on the left on a "
        "white background'."
    )


def warn_unknown_words(text: str) -> list[str]:
    """Warn (UserWarning) when `text` has words outside the toy vocabulary; return them."""
    words = unknown_words(text)
    if words:
        warnings.warn(unknown_words_message(words), UserWarning, stacklevel=2)
    return words
