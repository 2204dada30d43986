"""The anonymizer's rules: which stored instances are de-identified, how, and where the copies go.

Rules are read from TOML or JSON (a file named by PACS_DEID_RULES, `pacs up --deid-rules`, CDK context
`deidRules`, or the JSON text itself). A rule matches an instance by partition (required), calling AE
title, modality and SOP class (every condition given must hold; a list matches any of its values):

    [[rule]]
    name = "trial-7"                       # for logs, errors and the export prefix; [a-z0-9-]
    partitions = ["trial-7"]               # required: where the originals arrive
    calling_aes = ["RESEARCH_CT"]          # optional: who sent them ((0002,0016) of the stored file)
    modalities = ["CT", "MR"]              # optional
    sop_classes = ["1.2.840.10008.5.1.4.1.1.2"]   # optional
    trigger = "InstanceStored"             # (default) each instance; or "StudyUpdated": the study's
    profile = "basic"                      # pacs.deid.Profile.parse: basic, research, basic+retain-uids…
    options = ["retain-longitudinal-modified-dates"]
    project = "trial-7"                    # the key's name (default: the rule's name)
    crosswalk = true                       # optional: original → pseudonym pairs kept, encrypted
    destination = { partition = "trial-7-deid" }   # ingested there: indexed and searchable
    # or: destination = { exports = true }  # Part 10 files under {partition}/export/rules/{rule}/files/

Validated when loaded (`RulesError` naming the rule and field): unknown keys, triggers, profiles or
options; a destination that is neither one partition nor the exports; a destination partition that one
of the rules' matched partitions is (directly, or through other rules: a loop).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacs.deid.options import Profile
from pacs.events.publisher import INSTANCE_STORED, STUDY_UPDATED
from pacs.services.rules_source import load_source, rule_list
from pacs.storage.keys import check_partition

_RULE_KEYS = {"name", "partitions", "calling_aes", "modalities", "sop_classes", "trigger", "profile",
              "options", "project", "destination", "crosswalk"}
_DEST_KEYS = {"partition", "exports"}
TRIGGERS = (INSTANCE_STORED, STUDY_UPDATED)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RulesError(ValueError):
    """The rules cannot be used: the message names the rule and what is wrong."""


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    """What a rule looks at: the instance's partition, sender, modality and SOP class."""

    partition: str
    calling_ae: str
    modality: str
    sop_class_uid: str


@dataclass(frozen=True, slots=True)
class DeidRule:
    name: str
    partitions: frozenset[str]
    profile: Profile
    project: str
    #: The destination partition, or None for the exports location.
    to_partition: str | None
    trigger: str = INSTANCE_STORED
    calling_aes: frozenset[str] = frozenset()
    modalities: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()
    #: Record original → pseudonym pairs in the project's encrypted crosswalk (`pacs.deid.crosswalk`).
    crosswalk: bool = False

    @property
    def needs_calling_ae(self) -> bool:
        return bool(self.calling_aes)

    def matches(self, f: InstanceFacts) -> bool:
        return (f.partition in self.partitions
                and (not self.calling_aes or f.calling_ae.strip() in self.calling_aes)
                and (not self.modalities or f.modality.upper() in self.modalities)
                and (not self.sop_classes or f.sop_class_uid in self.sop_classes))

    def destination(self) -> str:
        return f"partition {self.to_partition}" if self.to_partition else "exports"

    def describe(self) -> str:
        conds = [f"partition {'|'.join(sorted(self.partitions))}"]
        for label, values in (("from", self.calling_aes), ("modality", self.modalities),
                              ("SOP class", self.sop_classes)):
            if values:
                conds.append(f"{label} {'|'.join(sorted(values))}")
        return (f"{self.name}: on {self.trigger}, {', '.join(conds)} -> {self.profile.describe()} "
                f"(project {self.project}) into {self.destination()}")


@dataclass(frozen=True, slots=True)
class DeidRules:
    rules: tuple[DeidRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def partitions(self) -> frozenset[str]:
        """Every partition a rule watches."""
        return frozenset(p for r in self.rules for p in r.partitions)

    def for_trigger(self, trigger: str, partition: str) -> list[DeidRule]:
        return [r for r in self.rules if r.trigger == trigger and partition in r.partitions]


def _strings(raw: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RulesError(f"{where}: {key} must be a string or a list of non-empty strings")
    return frozenset(v.strip() for v in value)


def _destination(raw: Any, where: str) -> str | None:
    if not isinstance(raw, Mapping):
        raise RulesError(f"{where}: `destination` must be {{ partition = \"…\" }} or {{ exports = true }}")
    unknown = set(raw) - _DEST_KEYS
    if unknown:
        raise RulesError(f"{where}: destination: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_DEST_KEYS))})")
    partition, exports = raw.get("partition"), raw.get("exports", False)
    if not isinstance(exports, bool) or exports == (partition is not None):
        raise RulesError(f"{where}: the destination is one partition or the exports, not both nor neither")
    if partition is None:
        return None
    try:
        return check_partition(str(partition))
    except ValueError as exc:
        raise RulesError(f"{where}: destination: {exc}") from None


def _rule(raw: Any, n: int) -> DeidRule:
    if not isinstance(raw, Mapping):
        raise RulesError(f"rule {n}: must be a table")
    name = raw.get("name")
    where = f"rule {name!r}" if name else f"rule {n}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_RULE_KEYS))})")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RulesError(f"{where}: `name` is required: lower-case letters, digits and '-' (it names the "
                         "export prefix)")
    partitions = _strings(raw, "partitions", where)
    if not partitions:
        raise RulesError(f"{where}: `partitions` is required (the partitions whose instances it takes)")
    for p in partitions:
        try:
            check_partition(p)
        except ValueError as exc:
            raise RulesError(f"{where}: {exc}") from None
    trigger = raw.get("trigger", INSTANCE_STORED)
    if trigger not in TRIGGERS:
        raise RulesError(f"{where}: trigger {trigger!r}: use {' or '.join(TRIGGERS)}")
    options = raw.get("options", [])
    if isinstance(options, str):
        options = [options]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise RulesError(f"{where}: `options` must be a list of option names")
    try:
        profile = Profile.parse(str(raw.get("profile", "basic")), options)
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from None
    project = raw.get("project", name)
    if not isinstance(project, str) or not project.strip():
        raise RulesError(f"{where}: `project` must be a non-empty string")
    crosswalk = raw.get("crosswalk", False)
    if not isinstance(crosswalk, bool):
        raise RulesError(f"{where}: `crosswalk` must be true or false")
    if "destination" not in raw:
        raise RulesError(f"{where}: `destination` is required "
                         "({ partition = \"…\" } or { exports = true })")
    to_partition = _destination(raw["destination"], where)
    if to_partition is not None and to_partition in partitions:
        raise RulesError(f"{where}: destination partition {to_partition!r} is one it takes instances from "
                         "(a loop: its copies would be de-identified again)")
    return DeidRule(
        name=name, partitions=partitions, profile=profile, project=project.strip(), to_partition=to_partition,
        trigger=str(trigger), calling_aes=_strings(raw, "calling_aes", where),
        modalities=frozenset(m.upper() for m in _strings(raw, "modalities", where)),
        sop_classes=_strings(raw, "sop_classes", where), crosswalk=crosswalk,
    )


def _check_loops(rules: Iterable[DeidRule]) -> None:
    """Refuse a chain of rules that leads a partition's copies back into it (p → q → … → p)."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for r in rules:
        if r.to_partition is not None:
            for p in r.partitions:
                edges.setdefault(p, set()).add((r.to_partition, r.name))

    def walk(start: str, node: str, path: list[str], seen: set[str]) -> None:
        for nxt, name in sorted(edges.get(node, ())):
            if nxt == start:
                raise RulesError(f"rules {' -> '.join([*path, name])} lead partition {start!r} back into "
                                 "itself (a loop: copies would be de-identified again)")
            if nxt not in seen:
                seen.add(nxt)
                walk(start, nxt, [*path, name], seen)

    for p in sorted(edges):
        walk(p, p, [], {p})


def parse_rules(data: Mapping[str, Any]) -> DeidRules:
    """Validated rules from their parsed document (`{"rule": [ ... ]}`; `rules` is taken too)."""
    raw_rules = rule_list(data, error=RulesError, what="the rules are a list of `rule`")
    rules = tuple(_rule(raw, n) for n, raw in enumerate(raw_rules, 1))
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RulesError(f"rule name(s) used twice: {', '.join(dup)}")
    _check_loops(rules)
    return DeidRules(rules)


def load_rules(source: str | Path | None) -> DeidRules:
    """The rules named by a setting: empty → none; text starting with `{` → JSON itself; else a file,
    TOML (`.toml`) or JSON (`.json`, or any content starting with `{`)."""
    return load_source(source, parse_rules, DeidRules, error=RulesError, what="de-identification rules",
                       text_name="the rules text", shape="the rules are a table with a `rule` list")


def describe(rules: DeidRules) -> Iterable[str]:
    """One line per rule: what it takes, how it de-identifies, where the copies go."""
    for r in rules.rules:
        yield r.describe()


__all__ = ["DeidRule", "DeidRules", "InstanceFacts", "RulesError", "describe", "load_rules", "parse_rules"]
