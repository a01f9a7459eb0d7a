"""CLIP's byte-level BPE alphabet, shared by the tokenizers this project builds offline."""

from __future__ import annotations


def byte_level_alphabet() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE uses for raw bytes (GPT-2 mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]
