"""The safe private attributes of PS3.15 Table E.3.10-1 (`data/safe-private.json`, provenance in
`data/README.md`): kept under the Retain Safe Private Option, matched by private creator (exact,
trailing spaces ignored) + group + element within the block (the low byte); every other private
element is removed. A private creator element is kept when its block keeps an element."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def safe_list() -> frozenset[tuple[str, int, int]]:
    """(creator, group, element-in-block) of every safe private attribute."""
    text = resources.files("pacs.deid").joinpath("data/safe-private.json").read_text("utf-8")
    doc = json.loads(text)
    return frozenset((row[0], int(row[1], 16), int(row[2], 16)) for row in doc["attributes"])


def is_safe(creator: str, tag: int) -> bool:
    """Whether the private element `tag` of a block reserved by `creator` is in Table E.3.10-1."""
    return (creator.strip(), tag >> 16, tag & 0xFF) in safe_list()


@lru_cache(maxsize=1)
def safe_blocks() -> frozenset[tuple[str, int]]:
    """(creator, group) of every block holding a safe private attribute."""
    return frozenset((creator, group) for creator, group, _ in safe_list())


@lru_cache(maxsize=1)
def _vrs() -> dict[tuple[str, int, int], str]:
    text = resources.files("pacs.deid").joinpath("data/safe-private.json").read_text("utf-8")
    return {(row[0], int(row[1], 16), int(row[2], 16)): row[3] for row in json.loads(text)["attributes"]}


def safe_vr(creator: str, tag: int) -> str:
    """The VR Table E.3.10-1 gives a safe private attribute ("" when none or not safe)."""
    return _vrs().get((creator.strip(), tag >> 16, tag & 0xFF), "")
