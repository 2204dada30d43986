"""Reading a rules setting (the transcode policy, the de-identification rules): JSON text, or a TOML or
JSON file, parsed into a table and handed to the rules' own parser; errors name where they come from.
`rule_list` is the top of both documents: a list of `rule` tables."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_source(source: str | Path | None, parse: Callable[[Mapping[str, Any]], T], empty: Callable[[], T],
                *, error: type[Exception], what: str, text_name: str, shape: str) -> T:
    """The rules named by a setting: empty → `empty()`; text starting with `{` → JSON itself; else a
    file, TOML (`.toml`) or JSON (`.json`, or any content starting with `{`). `error` is raised with
    `what` (cannot read the file), `text_name` (where JSON text fails) or `shape` (not a table)."""
    if source is None or not str(source).strip():
        return empty()
    text = str(source).strip()
    if text.startswith("{"):
        return _parse_text(text, "json", text_name, parse, error, shape)
    path = Path(text)
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    kind = "json" if path.suffix.lower() == ".json" or content.lstrip().startswith("{") else "toml"
    return _parse_text(content, kind, str(path), parse, error, shape)


def _parse_text(text: str, kind: str, where: str, parse: Callable[[Mapping[str, Any]], T],
                error: type[Exception], shape: str) -> T:
    try:
        data = json.loads(text) if kind == "json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{where}: not valid {kind.upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{where}: {shape}")
    try:
        return parse(data)
    except error as exc:
        raise error(f"{where}: {exc}") from None


def rule_list(data: Mapping[str, Any], *, error: type[Exception], what: str) -> list[Any]:
    """The raw `rule` list of a parsed document (`rules` is taken too); `error` for other top-level
    keys (`what` says what the document is) or a `rule` that is not a list."""
    unknown = set(data) - {"rule", "rules"}
    if unknown:
        raise error(f"unknown top-level key(s) {', '.join(sorted(unknown))}: {what}")
    raw_rules = data.get("rule", data.get("rules", []))
    if not isinstance(raw_rules, list):
        raise error("`rule` must be a list of tables ([[rule]] in TOML)")
    return raw_rules
