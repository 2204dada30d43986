"""Attribute matching of PS3.4 C.2.2.2, written once: QIDO-RS and C-FIND both use it.

(Interface stub; the implementation is being written.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

ConditionKind = Literal["universal", "single", "wildcard", "range", "list"]


@dataclass(frozen=True, slots=True)
class Condition:
    tag: str  # 8 upper-case hex digits, e.g. "00100010"
    vr: str
    value: str
    kind: ConditionKind


def condition(key: str, value: str) -> Condition:
    raise NotImplementedError


def matches(attrs: dict[str, dict[str, Any]], cond: Condition, *, fuzzy: bool = False) -> bool:
    raise NotImplementedError


def matches_all(
    attrs: dict[str, dict[str, Any]], conds: Sequence[Condition], *, fuzzy: bool = False
) -> bool:
    return all(matches(attrs, c, fuzzy=fuzzy) for c in conds)
