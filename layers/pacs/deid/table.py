"""PS3.15 Table E.1-1 as data: `data/ps315-annex-e.json` (621 rows, DICOM 2024b) compiled, once per
Profile, into a tag → action map.

Actions are the table's codes: D, Z, X, K, C, U and the compound codes (Z/D, X/Z, X/D, X/Z/D,
X/Z/U*), which `iod_types` resolves by the attribute's Type in the SOP class's IOD.

Decisions (PS3.15 E.1.1 and E.3):

- **An option with a value in a row replaces the Basic Profile action** (the table's option
  columns, E.3). **When two chosen options give different actions for one row, C wins over K**:
  e.g. Date of Last Calibration is K under Retain Device Identity and C under Retain Longitudinal
  Temporal Information with Modified Dates; both chosen → C (dates shifted). The options each
  "retain" only what they are about; an option that asks for cleaning exists because the kept
  value may identify, so the more protective of the two requested treatments applies.
  (Retain Longitudinal Full Dates and Modified Dates exclude each other: `Profile.parse`.)
- **Pattern rows**: (50xx,xxxx) Curve Data, every element of the even groups 5000–501E;
  (60xx,3000) Overlay Data and (60xx,4000) Overlay Comments, even groups 6000–601E only;
  (gggg,eeee) with gggg odd: private attributes, X, or C (= kept only when in the safe list of
  Table E.3.10-1, `private`) under Retain Safe Private. Private creator elements follow their block.
  When Overlay Data is removed, so is the rest of its overlay group (rows, columns, origin…): an
  overlay without its data is not a valid Overlay Plane module (PS3.3 C.9.2, Overlay Data Type 1).
- **Attributes not in the table**: E.1.1 asks the de-identifier to protect the attributes the
  table lists "whether contained in the main dataset or embedded in an Item of a Sequence"; the
  table is the list of standard attributes that may identify, so a standard attribute it does not
  list is kept (K; a sequence is kept and its items cleaned by the same table). An even-group
  element that is not in the data dictionary (its meaning cannot be judged), a group length
  (gggg,0000) and a command-group element are removed (X). File meta (0002,eeee) is made anew (and
  removed from the data set body, where broken writers sometimes put it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from pydicom.datadict import dictionary_has_tag, repeater_has_tag

from pacs.deid.options import COLUMNS, Option

#: Pattern row ids of the JSON.
CURVES, OVERLAY_DATA, OVERLAY_COMMENTS, PRIVATE = (
    "50xxxxxx", "60xx3000", "60xx4000", "ggggeeee-where-gggg-is-odd")
PATTERNS = (CURVES, OVERLAY_DATA, OVERLAY_COMMENTS, PRIVATE)


@lru_cache(maxsize=1)
def rows() -> tuple[dict[str, Any], ...]:
    """The rows of Table E.1-1 as shipped (`data/ps315-annex-e.json`)."""
    text = resources.files("pacs.deid").joinpath("data/ps315-annex-e.json").read_text("utf-8")
    return tuple(json.loads(text))


def row_action(row: dict[str, Any], options: frozenset[Option]) -> str:
    """The action of one row under the basic profile plus `options` (C over K when they differ)."""
    chosen = {row[COLUMNS[o]] for o in options if o in COLUMNS and COLUMNS[o] in row}
    if not chosen:
        return str(row["basicProfile"])
    return "C" if "C" in chosen else chosen.pop()


@dataclass(frozen=True, slots=True)
class ActionMap:
    """The compiled table of one option set: `exact` tag → action, and the pattern rows' actions."""

    exact: dict[int, str]
    curves: str
    overlay_data: str
    overlay_comments: str
    private: str
    #: Actions worked out for tags not in `exact` (patterns, unlisted), kept for the next instance.
    seen: dict[int, str] = field(default_factory=dict)

    def action(self, tag: int) -> str:
        """The action for `tag` (an int), patterns and unlisted attributes included."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        found = self.seen.get(tag)
        if found is None:
            found = self._unlisted(tag)
            if len(self.seen) < 65536:
                self.seen[tag] = found
        return found

    def _unlisted(self, tag: int) -> str:
        group = tag >> 16
        if group & 1:
            return self.private
        if (tag & 0xFFFF) == 0 or group <= 2:
            return "X"
        if 0x5000 <= group <= 0x501E:
            return self.curves
        if 0x6000 <= group <= 0x601E:
            element = tag & 0xFFFF
            if element == 0x3000:
                return self.overlay_data
            if element == 0x4000:
                return self.overlay_comments
            if self.overlay_data == "X":
                return "X"  # an overlay without its data is no Overlay Plane (PS3.3 C.9.2): all of it
        return "K" if dictionary_has_tag(tag) or repeater_has_tag(tag) else "X"


@lru_cache(maxsize=64)
def compile_table(options: frozenset[Option]) -> ActionMap:
    """The action map of the basic profile plus `options`, computed once per option set."""
    exact: dict[int, str] = {}
    patterns: dict[str, str] = {}
    for row in rows():
        action = row_action(row, options)
        if row["id"] in PATTERNS:
            patterns[row["id"]] = action
        else:
            exact[int(row["id"], 16)] = action
    return ActionMap(exact, patterns[CURVES], patterns[OVERLAY_DATA], patterns[OVERLAY_COMMENTS],
                     patterns[PRIVATE])
