"""The transcoder's policy: which derived copies to make of a stored instance.

A policy is a list of rules, read from TOML or JSON (a file named by PACS_TRANSCODE_POLICY, or the JSON
text itself). A rule matches an instance by partition, modality, SOP class, stored transfer syntax and
size (every condition given must hold; a list matches any of its values); each matching rule names
copies to make — a target syntax and encoding options. No policy, or no rule: nothing is derived.

    [[rule]]
    name = "viewing"                       # for logs and errors
    modalities = ["CT", "MR"]              # optional: partitions, modalities, sop_classes,
    min_bytes = 1024                       #   stored_syntaxes, min_bytes, max_bytes
    copies = [
      { syntax = "HTJ2KLossless" },        # a UID, or pydicom's keyword of it
      { syntax = "JPEGLSNearLossless", near_lossless = 2 },
    ]

Validated when loaded (`PolicyError` with the rule and field): unknown keys or syntaxes, a syntax no
codec here can encode, options that do not fit the syntax.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import uid as pydicom_uid

from pacs.codecs import SYNTAXES, EncodeOptions, can_encode
from pacs.services.rules_source import load_source, rule_list

_RULE_KEYS = {"name", "partitions", "modalities", "sop_classes", "stored_syntaxes", "min_bytes", "max_bytes",
              "copies"}
_COPY_KEYS = {"syntax", "quality", "near_lossless", "ratio"}
#: Which option each lossy syntax takes.
_OPTION_OF = {
    pydicom_uid.JPEGBaseline8Bit: "quality", pydicom_uid.JPEGExtended12Bit: "quality",
    pydicom_uid.JPEGLSNearLossless: "near_lossless",
    pydicom_uid.JPEG2000: "ratio", pydicom_uid.HTJ2K: "ratio",
}


class PolicyError(ValueError):
    """The policy cannot be used: the message names the rule and what is wrong."""


@dataclass(frozen=True, slots=True)
class Target:
    """One derived copy: a transfer syntax UID and how to encode it."""

    syntax: str
    options: EncodeOptions = field(default_factory=EncodeOptions)

    @property
    def name(self) -> str:
        info = SYNTAXES.get(self.syntax)
        return info.name if info else self.syntax


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    """What a rule looks at (from an InstanceStored event, or the catalog)."""

    partition: str
    modality: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    copies: tuple[Target, ...]
    partitions: frozenset[str] = frozenset()
    modalities: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()
    stored_syntaxes: frozenset[str] = frozenset()
    min_bytes: int | None = None
    max_bytes: int | None = None

    @property
    def needs_modality(self) -> bool:
        return bool(self.modalities)

    def matches(self, f: InstanceFacts) -> bool:
        return ((not self.partitions or f.partition in self.partitions)
                and (not self.modalities or f.modality.upper() in self.modalities)
                and (not self.sop_classes or f.sop_class_uid in self.sop_classes)
                and (not self.stored_syntaxes or f.transfer_syntax_uid in self.stored_syntaxes)
                and (self.min_bytes is None or f.size >= self.min_bytes)
                and (self.max_bytes is None or f.size <= self.max_bytes))


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def needs_modality(self) -> bool:
        return any(r.needs_modality for r in self.rules)

    def targets(self, facts: InstanceFacts) -> list[Target]:
        """The copies to make of an instance: every matching rule's, each once, in rule order; none in
        the syntax the instance is stored in unless lossy options ask for something else."""
        out: list[Target] = []
        for rule in self.rules:
            if rule.matches(facts):
                for t in rule.copies:
                    if t in out or (t.syntax == facts.transfer_syntax_uid and not t.options.lossy):
                        continue
                    out.append(t)
        return out


def resolve_syntax(value: str, where: str) -> str:
    """A transfer syntax UID from a UID or pydicom's keyword (`JPEGLSLossless`)."""
    text = str(value).strip()
    if text in SYNTAXES:
        return text
    candidate = getattr(pydicom_uid, text, None)
    if isinstance(candidate, str) and str(candidate) in SYNTAXES:
        return str(candidate)
    known = ", ".join(sorted(pydicom_uid.UID(s).keyword or s for s in SYNTAXES))
    raise PolicyError(f"{where}: unknown transfer syntax {text!r} (use a UID or one of: {known})")


def _strings(rule: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = rule.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: {key} must be a string or a list of strings")
    return frozenset(value)


def _size(rule: Mapping[str, Any], key: str, where: str) -> int | None:
    value = rule.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError(f"{where}: {key} must be a whole number of bytes")
    return value


def _target(raw: Any, where: str) -> Target:
    if isinstance(raw, str):
        raw = {"syntax": raw}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: a copy is a syntax or a table with `syntax`")
    unknown = set(raw) - _COPY_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: "
                          f"{', '.join(sorted(_COPY_KEYS))})")
    if "syntax" not in raw:
        raise PolicyError(f"{where}: `syntax` is missing")
    syntax = resolve_syntax(raw["syntax"], where)
    name = SYNTAXES[syntax].name
    if not can_encode(syntax):
        raise PolicyError(f"{where}: no codec installed here can encode {name} ({syntax})")
    given = {k: raw[k] for k in ("quality", "near_lossless", "ratio") if raw.get(k) is not None}
    allowed = _OPTION_OF.get(pydicom_uid.UID(syntax))
    for k, v in given.items():
        if k != allowed:
            raise PolicyError(f"{where}: {name} does not take `{k}`"
                              + (f" (it takes `{allowed}`)" if allowed else " (it is lossless only)"))
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise PolicyError(f"{where}: `{k}` must be a non-negative number")
    if "quality" in given and not 1 <= given["quality"] <= 100:
        raise PolicyError(f"{where}: `quality` is 1 to 100")
    options = EncodeOptions(
        quality=int(given["quality"]) if "quality" in given else None,
        near_lossless=int(given["near_lossless"]) if "near_lossless" in given else None,
        ratio=float(given["ratio"]) if "ratio" in given else None,
    )
    return Target(syntax, options)


def parse_policy(data: Mapping[str, Any]) -> Policy:
    """A validated policy from its parsed document (`{"rule": [ ... ]}`; `rules` is taken too)."""
    raw_rules = rule_list(data, error=PolicyError, what="the policy is a list of `rule`")
    rules = []
    for n, raw in enumerate(raw_rules, 1):
        if not isinstance(raw, Mapping):
            raise PolicyError(f"rule {n}: must be a table")
        name = str(raw.get("name") or f"rule {n}")
        where = f"rule {name!r}" if raw.get("name") else name
        extra = set(raw) - _RULE_KEYS
        if extra:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(extra))} (known: "
                              f"{', '.join(sorted(_RULE_KEYS))})")
        copies = raw.get("copies")
        if not isinstance(copies, list) or not copies:
            raise PolicyError(f"{where}: `copies` must list at least one derived copy")
        stored = _strings(raw, "stored_syntaxes", where)
        rule = Rule(
            name=name,
            copies=tuple(_target(c, f"{where}, copy {i}") for i, c in enumerate(copies, 1)),
            partitions=_strings(raw, "partitions", where),
            modalities=frozenset(m.upper() for m in _strings(raw, "modalities", where)),
            sop_classes=_strings(raw, "sop_classes", where),
            stored_syntaxes=frozenset(resolve_syntax(s, where) for s in stored),
            min_bytes=_size(raw, "min_bytes", where),
            max_bytes=_size(raw, "max_bytes", where),
        )
        if rule.min_bytes is not None and rule.max_bytes is not None and rule.min_bytes > rule.max_bytes:
            raise PolicyError(f"{where}: min_bytes is above max_bytes")
        rules.append(rule)
    return Policy(tuple(rules))


def load_policy(source: str | Path | None) -> Policy:
    """The policy named by a setting: empty → no rules; text starting with `{` → JSON itself; else a
    file, TOML (`.toml`) or JSON (`.json`, or any other name whose content starts with `{`)."""
    return load_source(source, parse_policy, Policy, error=PolicyError, what="transcode policy",
                       text_name="the policy text", shape="the policy is a table with a `rule` list")


def describe(policy: Policy) -> Iterable[str]:
    """One line per rule, for start-up logs."""
    for r in policy.rules:
        yield f"{r.name}: " + ", ".join(
            t.name + (f" ({_text(t.options)})" if t.options.lossy else "") for t in r.copies)


def _text(o: EncodeOptions) -> str:
    return ", ".join(f"{k}={v}" for k, v in _opts(o).items())


def _opts(o: EncodeOptions) -> dict[str, Any]:
    return {k: v for k, v in (("quality", o.quality), ("near_lossless", o.near_lossless), ("ratio", o.ratio))
            if v is not None}


def options_dict(o: EncodeOptions) -> dict[str, Any]:
    """The options as recorded in a derived-copy row ({} for the lossless default)."""
    return _opts(o)


def options_from(d: Mapping[str, Any] | None) -> EncodeOptions:
    d = d or {}
    return EncodeOptions(quality=d.get("quality"), near_lossless=d.get("near_lossless"), ratio=d.get("ratio"))


__all__ = ["InstanceFacts", "Policy", "PolicyError", "Rule", "Target", "load_policy", "parse_policy",
           "resolve_syntax"]
