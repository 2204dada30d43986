"""Attribute matching of PS3.4 C.2.2.2, written once: QIDO-RS and C-FIND both use it.

`condition()` resolves a query key through the pydicom dictionary, classifies and validates the
value and precompiles a matcher; `matches()` then tests that condition against DICOM JSON objects
(PS3.18 Annex F) cheaply, row after row.

Rules (PS3.4 C.2.2.2, DICOMweb PS3.18 8.3.4):
- universal: "" or "*" (padding ignored) matches everything, absent attributes included;
- single value: exact. PN is case- and accent-insensitive (`normalize_name` forms, every group of
  the stored name); numbers compare numerically; TM/DT ignore a fraction's trailing zeros and DT
  its UTC offset; other strings are case-sensitive, the stored value's padding ignored;
- wildcard (`*` any run, `?` one character), anchored: any string VR but DA, TM, DT and UI;
  PN applies the normalised pattern to normalised names;
- range `a-b`, `-b`, `a-` (inclusive): DA, TM, DT. Partial bounds widen: TM `-10` reaches
  10:59:59.999999, DT `2024-` starts at 2024-01-01T00:00;
- list: values separated by `\\` (also `,` for UI) are ORed (not on LT, ST, UT, UR);
- every other condition fails on an absent or zero-length attribute; a multi-valued attribute
  matches when any of its values does;
- fuzzy (DICOMweb `fuzzymatching=true`), PN only: each query word is a prefix of some word of the
  name, in any order; this widens the exact rules, it never narrows them.
A malformed key or value raises ValueError naming the key (HTTP 400, C-FIND 0xA900).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

from pydicom.datadict import dictionary_VR, tag_for_keyword

from pacs.catalog.records import QueryPage

T = TypeVar("T")

ConditionKind = Literal["universal", "single", "wildcard", "range", "list"]

_PAD = " \x00"
_INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_NUMERIC_VRS = _INTEGER_VRS | {"DS", "FL", "FD"}
_BINARY_NUMERIC_VRS = _NUMERIC_VRS - {"IS", "DS"}
_UNMATCHABLE_VRS = frozenset({"SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT", "UR"})  # a backslash there is text
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

# Padding of partial TM/DT values into comparable full forms: lower and upper bounds.
_TM_LOW, _TM_HIGH = "000000.000000", "235959.999999"
_DT_LOW, _DT_HIGH = "00000101000000.000000", "99991231235959.999999"

_TAG_RE = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)|([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})")
_DA_RE = re.compile(r"\d{8}", re.ASCII)
_TM_PART = r"(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?"
_TM_RE = re.compile(_TM_PART, re.ASCII)
_DT_RE = re.compile(
    r"\d{4}(?:(?:0[1-9]|1[0-2])(?:(?:0[1-9]|[12]\d|3[01])(?:" + _TM_PART + r")?)?)?"
    r"(?:[+-](?:0\d|1[0-4])[0-5]\d)?",
    re.ASCII,
)
_UID_RE = re.compile(r"[0-9A-Za-z.-]{1,64}")  # key-safe: stored non-UIDs (GUIDs) are matched too
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

# Diacritical marks dropped by accent folding. Kana voicing marks (U+3099/309A) are kept: they
# change the sound, not an accent, and NFC recomposes them.
_DIACRITICS = {
    cp: None
    for lo, hi in ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F))
    for cp in range(lo, hi + 1)
}


# --- person names -------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _fold_unicode(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.upper()).translate(_DIACRITICS)
    return unicodedata.normalize("NFC", s).upper()


def _fold(s: str) -> str:
    """Upper-case, accent-folded, with '^' and whitespace runs collapsed to single spaces."""
    s = s.upper() if s.isascii() else _fold_unicode(s)
    return " ".join(s.replace("^", " ").split())


def normalize_name(value: str) -> str:
    """Normalised form of a PN string's alphabetic group: "Doe^Jöhn^^^=..." -> "DOE JOHN"."""
    return _fold(value.split("=", 1)[0])


def _pn_groups(v: Any) -> list[str]:
    if isinstance(v, dict):
        return [g for k in _PN_GROUPS if isinstance(g := v.get(k), str) and g]
    if isinstance(v, str):
        return v.split("=")
    return []


def name_keys(stored: Any) -> tuple[str, ...]:
    """Normalised forms of every non-empty group of a stored PN value (DICOM JSON object or
    "A=I=P" string), e.g. to index names: a PN query may match through any group."""
    return tuple(dict.fromkeys(k for g in _pn_groups(stored) if (k := _fold(g))))


# --- stored-value normalisation -----------------------------------------------------------------


def _s(v: Any) -> str:
    return v.strip(_PAD) if isinstance(v, str) else str(v)


def _num(v: Any) -> int | float | None:
    if v.__class__ is int or v.__class__ is float:
        return v  # type: ignore[no-any-return]
    if isinstance(v, str):
        s = v.strip(_PAD)
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return None
    return None


def _da(v: Any) -> str:
    s = _s(v)
    return s.replace(".", "") if len(s) == 10 and s[4] == "." else s  # ACR-NEMA "YYYY.MM.DD"


def _tm_raw(v: Any) -> str:
    return _s(v).replace(":", "")  # ACR-NEMA "HH:MM:SS"


def _tm(v: Any) -> str:
    """TM for exact comparison: the fraction zero-padded once seconds are present."""
    s = _tm_raw(v)
    return s[:6] + "." + s[7:].ljust(6, "0") if len(s) >= 6 else s


def _tm_low(v: Any) -> str:
    s = _tm_raw(v)
    return s + _TM_LOW[len(s) :]


def _dt_raw(v: Any) -> str:
    s = _s(v)
    return s[:-5] if len(s) > 5 and s[-5] in "+-" else s  # the UTC offset is ignored


def _dt(v: Any) -> str:
    s = _dt_raw(v)
    return s[:14] + "." + s[15:].ljust(6, "0") if len(s) >= 14 else s


def _dt_low(v: Any) -> str:
    s = _dt_raw(v)
    return s + _DT_LOW[len(s) :]


# --- matchers: one `test(stored value)` each, picklable, no per-row allocation beyond need -------


class _Matcher(Protocol):
    def test(self, v: Any) -> bool: ...


class _Exact:
    __slots__ = ("q",)

    def __init__(self, q: str) -> None:
        self.q = q

    def test(self, v: Any) -> bool:
        return v == self.q or _s(v) == self.q


class _InSet:
    __slots__ = ("qs",)

    def __init__(self, qs: frozenset[str]) -> None:
        self.qs = qs

    def test(self, v: Any) -> bool:
        return _s(v) in self.qs


class _Prefix:
    __slots__ = ("p",)

    def __init__(self, p: str) -> None:
        self.p = p

    def test(self, v: Any) -> bool:
        return _s(v).startswith(self.p)


class _Glob:
    __slots__ = ("rx",)

    def __init__(self, rx: re.Pattern[str]) -> None:
        self.rx = rx

    def test(self, v: Any) -> bool:
        return self.rx.fullmatch(_s(v)) is not None


class _Number:
    __slots__ = ("qs",)

    def __init__(self, qs: frozenset[int | float]) -> None:
        self.qs = qs

    def test(self, v: Any) -> bool:
        return _num(v) in self.qs  # 3 and 3.0 hash alike


class _Canon:
    """Exact match on a canonical form (DA, TM, DT)."""

    __slots__ = ("canon", "q")

    def __init__(self, q: str, canon: Callable[[Any], str]) -> None:
        self.q, self.canon = q, canon

    def test(self, v: Any) -> bool:
        return self.canon(v) == self.q


class _Between:
    __slots__ = ("hi", "lo", "low")

    def __init__(self, lo: str | None, hi: str | None, low: Callable[[Any], str]) -> None:
        self.lo, self.hi, self.low = lo, hi, low

    def test(self, v: Any) -> bool:
        x = self.low(v)
        return (self.lo is None or x >= self.lo) and (self.hi is None or x <= self.hi)


class _AnyOf:
    __slots__ = ("ms",)

    def __init__(self, ms: Sequence[_Matcher]) -> None:
        self.ms = tuple(ms)

    def test(self, v: Any) -> bool:
        return any(m.test(v) for m in self.ms)


class _PnExact:
    __slots__ = ("q",)

    def __init__(self, q: str) -> None:
        self.q = q

    def test(self, v: Any) -> bool:
        return any(_fold(g) == self.q for g in _pn_groups(v))


class _PnGlob:
    """A normalised pattern; trailing " *" components are optional: `rx` has one, `alt` none
    ("Doe^*" and "Doe^*^*" match "Doe^John" and a bare "Doe")."""

    __slots__ = ("alt", "rx")

    def __init__(self, rx: re.Pattern[str], alt: re.Pattern[str] | None) -> None:
        self.rx, self.alt = rx, alt

    def test(self, v: Any) -> bool:
        for g in _pn_groups(v):
            n = _fold(g)
            if self.rx.fullmatch(n) or (self.alt is not None and self.alt.fullmatch(n)):
                return True
        return False


class _PnPrefix:
    __slots__ = ("p",)

    def __init__(self, p: str) -> None:
        self.p = p

    def test(self, v: Any) -> bool:
        return any(_fold(g).startswith(self.p) for g in _pn_groups(v))


class _PnFuzzy:
    """Every query word begins some word of one group of the name; else the exact rule."""

    __slots__ = ("exact", "words")

    def __init__(self, words: tuple[str | re.Pattern[str], ...], exact: _Matcher) -> None:
        self.words, self.exact = words, exact

    def test(self, v: Any) -> bool:
        for g in _pn_groups(v):
            names = _fold(g).split()
            if all(
                any(n.startswith(w) if isinstance(w, str) else w.fullmatch(n) for n in names)
                for w in self.words
            ):
                return True
        return self.exact.test(v)


def _glob(p: str) -> re.Pattern[str]:
    """Anchored (use fullmatch) regex of a `*`/`?` pattern, linear-time: each middle segment is
    committed at its leftmost occurrence (atomic group), which is optimal for `*` gaps."""
    segs = ["".join("." if c == "?" else re.escape(c) for c in s) for s in p.split("*")]
    if len(segs) == 1:
        rx = segs[0]
    else:
        rx = segs[0] + "".join(f"(?>.*?{s})" for s in segs[1:-1] if s) + ".*" + segs[-1]
    return re.compile(rx, re.DOTALL)


def _literal_prefix(v: str) -> str:
    """The text before the first wildcard."""
    return v[: min((i for i in (v.find("*"), v.find("?")) if i >= 0), default=len(v))]


def _is_prefix_pattern(p: str) -> bool:
    return p.endswith("*") and "*" not in p[:-1] and "?" not in p


# --- plans --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: ConditionKind
    matcher: _Matcher | None = None
    fuzzy: _Matcher | None = None
    bounds: tuple[str | None, str | None] = (None, None)
    prefix: str = ""
    values: tuple[str, ...] = ()


_UNIVERSAL = _Plan("universal")
_NO_PLAN = _Plan("universal")  # sentinel: Condition built directly, plan still to compute


def _bad(key: str, why: str) -> ValueError:
    return ValueError(f"{key}: {why}")


def _check_date(key: str, s: str, what: str) -> None:
    try:
        date(int(s[:4]), int(s[4:6] or 1), int(s[6:8] or 1))
    except ValueError:
        raise _bad(key, f"invalid {what} {s!r}") from None


def _da_value(key: str, s: str) -> str:
    if not _DA_RE.fullmatch(s):
        raise _bad(key, f"invalid date {s!r} (expected YYYYMMDD)")
    _check_date(key, s, "date")
    return s


def _tm_value(key: str, s: str) -> str:
    if not _TM_RE.fullmatch(s):
        raise _bad(key, f"invalid time {s!r} (expected HH[MM[SS[.FFFFFF]]])")
    return s


def _dt_value(key: str, s: str) -> str:
    """A validated DT without its UTC offset."""
    if not _DT_RE.fullmatch(s):
        raise _bad(key, f"invalid date-time {s!r}")
    s = _dt_raw(s)
    _check_date(key, s[:8], "date-time")
    return s


def _date_plan(key: str, vr: str, v: str) -> _Plan:
    if "*" in v or "?" in v:
        raise _bad(key, f"wildcards are not allowed on {vr} values")
    if vr == "DA":
        parse, low_t, high_t = _da_value, "", ""
        canon, low = _da, _da
    elif vr == "TM":
        parse, low_t, high_t = _tm_value, _TM_LOW, _TM_HIGH
        canon, low = _tm, _tm_low
    else:
        parse, low_t, high_t = _dt_value, _DT_LOW, _DT_HIGH
        canon, low = _dt, _dt_low

    def widen(s: str) -> tuple[str, str]:
        return s + low_t[len(s) :], s + high_t[len(s) :]

    # A DT with a negative UTC offset is a single value, not a range ("...120000-0500").
    if "-" not in v or (vr == "DT" and _DT_RE.fullmatch(v)):
        s = parse(key, v)
        return _Plan("single", _Canon(canon(s), canon), bounds=widen(s), prefix=v, values=(v,))
    if vr == "DT":
        splits = [i for i, c in enumerate(v) if c == "-"]
        for i in splits:
            a, b = v[:i], v[i + 1 :]
            if (not a or _DT_RE.fullmatch(a)) and (not b or _DT_RE.fullmatch(b)):
                break
        else:
            raise _bad(key, f"invalid date-time range {v!r}")
    else:
        parts = v.split("-")
        if len(parts) != 2:
            raise _bad(key, f"invalid range {v!r}")
        a, b = parts
    if not a and not b:
        raise _bad(key, f"invalid range {v!r}")
    lo = widen(parse(key, a))[0] if a else None
    hi = widen(parse(key, b))[1] if b else None
    return _Plan("range", _Between(lo, hi, low), bounds=(lo, hi))


def _pn_plan(key: str, v: str) -> _Plan:
    q = next((n for g in v.split("=") if (n := _fold(g))), "")
    if not q or q == "*":
        return _UNIVERSAL
    words = tuple(_glob(w + "*") if "*" in w or "?" in w else w for w in q.split(" "))
    if "*" not in q and "?" not in q:
        exact: _Matcher = _PnExact(q)
        return _Plan("single", exact, _PnFuzzy(words, exact), prefix=v, values=(v,))
    if _is_prefix_pattern(q) and not q.endswith(" *"):
        glob: _Matcher = _PnPrefix(q[:-1])
    else:
        core = q
        while core.endswith(" *"):
            core = core[:-2]
        glob = _PnGlob(_glob(core + " *"), _glob(core)) if core != q else _PnGlob(_glob(q), None)
    return _Plan("wildcard", glob, _PnFuzzy(words, glob), prefix=_literal_prefix(v))


def _number(key: str, vr: str, s: str) -> int | float:
    if not _NUMBER_RE.fullmatch(s):
        raise _bad(key, f"invalid number {s!r} for VR {vr}")
    try:
        return int(s)
    except ValueError:
        n = float(s)
    if not math.isfinite(n) or (vr in _INTEGER_VRS and not n.is_integer()):
        raise _bad(key, f"invalid number {s!r} for VR {vr}")
    return int(n) if vr in _INTEGER_VRS else n


def _one_plan(key: str, vr: str, v: str) -> _Plan:
    """Plan of one non-universal value (no list separators)."""
    if vr == "PN":
        return _pn_plan(key, v)
    if vr in ("DA", "TM", "DT"):
        return _date_plan(key, vr, v)
    wild = "*" in v or "?" in v
    if vr == "UI":
        if not _UID_RE.fullmatch(v):
            raise _bad(key, f"invalid UID {v!r}")
        return _Plan("single", _Exact(v), prefix=v, values=(v,))
    if vr in _NUMERIC_VRS and not wild:
        return _Plan("single", _Number(frozenset({_number(key, vr, v)})), prefix=v, values=(v,))
    if vr in _BINARY_NUMERIC_VRS:
        raise _bad(key, f"wildcards are not allowed on {vr} values")
    if not wild:
        return _Plan("single", _Exact(v), prefix=v, values=(v,))
    glob: _Matcher = _Prefix(v[:-1]) if _is_prefix_pattern(v) else _Glob(_glob(v))
    return _Plan("wildcard", glob, prefix=_literal_prefix(v))


def _list_plan(key: str, vr: str, parts: list[str]) -> _Plan:
    plans = [_one_plan(key, vr, p) for p in parts]
    if any(p.kind == "universal" for p in plans):
        return _UNIVERSAL
    values = tuple(parts)
    bounds: tuple[str | None, str | None] = (None, None)
    if vr in ("DA", "TM", "DT"):
        los, his = [p.bounds[0] for p in plans], [p.bounds[1] for p in plans]
        bounds = (
            None if None in los else min(x for x in los if x is not None),
            None if None in his else max(x for x in his if x is not None),
        )
    matcher: _Matcher
    if all(isinstance(p.matcher, _Exact) for p in plans):
        matcher = _InSet(frozenset(parts))
    elif all(isinstance(p.matcher, _Number) for p in plans):
        matcher = _Number(frozenset(n for p in plans for n in p.matcher.qs))  # type: ignore[union-attr]
    else:
        matcher = _AnyOf([p.matcher for p in plans if p.matcher is not None])
    fuzzy = _AnyOf([p.fuzzy for p in plans if p.fuzzy is not None]) if vr == "PN" else None
    return _Plan("list", matcher, fuzzy, bounds=bounds, values=values)


def _make_plan(key: str, vr: str, value: str) -> _Plan:
    v = value.strip(_PAD)
    if vr == "TM":
        v = v.replace(":", "")
    if v in ("", "*"):
        return _UNIVERSAL
    if vr not in _SINGLE_VALUED_VRS and ("\\" in v or (vr == "UI" and "," in v)):
        parts = [p for p in (p.strip(_PAD) for p in re.split(r"[\\,]" if vr == "UI" else r"\\", v)) if p]
        parts = list(dict.fromkeys(parts))
        if not parts or "*" in parts:
            return _UNIVERSAL
        if len(parts) > 1:
            return _list_plan(key, vr, parts)
        v = parts[0]
    return _one_plan(key, vr, v)


def _resolve(key: str) -> tuple[str, str]:
    k = key.strip()
    if m := _TAG_RE.fullmatch(k):
        tag: int | None = int("".join(g for g in m.groups() if g), 16)
    else:
        tag = tag_for_keyword(k)
    if tag is None:
        raise _bad(key, "unknown attribute")
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise _bad(key, "unknown attribute") from None
    vr = vr.split(" or ")[0]
    if vr == "SQ":
        raise _bad(key, "sequence attributes cannot be matched")
    if vr in _UNMATCHABLE_VRS:
        raise _bad(key, f"attributes of VR {vr} cannot be matched")
    return f"{tag:08X}", vr


# --- public API ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One matching key. Build with `condition()`; a direct construction is validated too."""

    tag: str  # 8 upper-case hex digits, e.g. "00100010"
    vr: str
    value: str  # as received (percent-decoded), padding included
    kind: ConditionKind
    _plan: _Plan = field(default=_NO_PLAN, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self._plan is _NO_PLAN:
            plan = _make_plan(self.tag, self.vr, self.value)
            if plan.kind != self.kind:
                raise ValueError(f"{self.tag}: {self.value!r} is a {plan.kind} condition, not {self.kind}")
            object.__setattr__(self, "_plan", plan)

    @property
    def range_bounds(self) -> tuple[str | None, str | None]:
        """Inclusive normalised bounds (None: open) of a DA/TM/DT condition: DA 'YYYYMMDD', TM
        'HHMMSS.FFFFFF', DT 'YYYYMMDDHHMMSS.FFFFFF' (offset dropped). A single or listed value gives
        the bounds that contain it (a superset, for an index). (None, None) for other VRs."""
        return self._plan.bounds

    @property
    def literal_prefix(self) -> str:
        """Wildcard: the text before the first `*`/`?`; single: the whole value (padding
        stripped); "" otherwise. For PN, `normalize_name(prefix)` begins the normalised group the
        query matched (`name_keys`); fuzzy matching escapes this."""
        return self._plan.prefix

    @property
    def uids(self) -> tuple[str, ...]:
        """List: the listed values (UIDs for UI); single: the value; () otherwise."""
        return self._plan.values


def condition(key: str, value: str) -> Condition:
    """A condition for a keyword ("PatientName") or tag ("00100010", "0010,0010",
    "(0010,0010)") and a query value; ValueError naming the key if either is invalid."""
    tag, vr = _resolve(key)
    plan = _make_plan(key, vr, value)
    return Condition(tag, vr, value, plan.kind, plan)


def matches(attrs: dict[str, dict[str, Any]], cond: Condition, *, fuzzy: bool = False) -> bool:
    """Whether a DICOM JSON object satisfies the condition (any value of a multi-valued one)."""
    plan = cond._plan
    if plan.kind == "universal":
        return True
    attr = attrs.get(cond.tag)
    if not attr:
        return False
    values = attr.get("Value")
    if not values:
        return False
    m = plan.fuzzy if fuzzy and plan.fuzzy is not None else plan.matcher
    assert m is not None
    test = m.test
    for v in values:  # noqa: SIM110 (a plain loop: no generator per row)
        if v is not None and test(v):
            return True
    return False


def matches_all(attrs: dict[str, dict[str, Any]], conds: Sequence[Condition], *, fuzzy: bool = False) -> bool:
    return all(matches(attrs, c, fuzzy=fuzzy) for c in conds)


def filter_page(
    rows: Iterable[T], to_json: Callable[[T], dict[str, dict[str, Any]]], conds: Sequence[Condition],
    *, fuzzy: bool, limit: int | None, offset: int,
) -> QueryPage[T]:
    """Filter candidate rows with the matcher, then apply offset/limit; reads no further than one
    row past the page (so `truncated` is known without walking the rest)."""
    out: list[T] = []
    skipped = 0
    for row in rows:
        if conds and not matches_all(to_json(row), conds, fuzzy=fuzzy):
            continue
        if skipped < offset:
            skipped += 1
            continue
        if limit is not None and len(out) >= limit:
            return QueryPage(out, truncated=True)
        out.append(row)
    return QueryPage(out)
