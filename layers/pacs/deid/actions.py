"""Replacement values per VR: the dummies of action D (and of the free-text values inside a
sequence replaced by D), and action C on text ("clean").

D: PN `ANONYMOUS`, DA `19000101`, TM `000000`, DT `19000101000000`, AS `000Y`, text (LO, SH, ST,
LT, UT, UC, CS) `ANONYMIZED`, AE `ANONYMOUS`, UR `urn:anonymized`, numbers 0, binary VRs zeros of
the original length (at least 2 bytes), AT (0000,0000); UI is remapped like U.

C on text (Clean Descriptors, Clean Structured Content, and the C rows of Retain Patient
Characteristics) keeps the descriptor's words but replaces every word that is one of the
instance's identifying values (names, IDs, accession, birth date, institution, station… : the
values of the attributes the basic profile removes or replaces) and every run of 4 or more digits
(dates, phone numbers, record numbers) with `*` ("values of similar meaning known not to identify",
E.1-1a). C on a sequence keeps it and cleans its items by the table. C on a date (longitudinal
modified dates) shifts it (`dates`); C on TM, and on Timezone Offset From UTC, keeps it; C on a
binary value (a timestamp, overlay or curve data) replaces it with zeros of the same length; C on
AE (Retain Device Identity with no AE to retain) gives the dummy.
"""

from __future__ import annotations

import re

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE", "UR", "AS"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
NUMBER_VRS = {"US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0}
DUMMY_TEXT: dict[str, str] = {
    "PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y",
    "LO": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED", "LT": "ANONYMIZED", "UT": "ANONYMIZED",
    "UC": "ANONYMIZED", "CS": "ANONYMIZED", "AE": "ANONYMOUS", "UR": "urn:anonymized", "DS": "0", "IS": "0",
}
_DIGITS = re.compile(r"\d{4,}")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def dummy(vr: str, length: int = 0) -> object:
    """A non-empty value consistent with `vr` (binary: zeros of `length`, at least 2 bytes)."""
    if vr in DUMMY_TEXT:
        return DUMMY_TEXT[vr]
    if vr in NUMBER_VRS:
        return NUMBER_VRS[vr]
    if vr == "AT":
        return 0
    size = max(2, length + (length & 1))
    return b"\0" * size


def identifying_words(values: list[str]) -> frozenset[str]:
    """The words (3+ characters, case-folded) of identifying values, for `clean_text`."""
    words: set[str] = set()
    for value in values:
        for word in _WORD.findall(value.replace("^", " ")):
            if len(word) >= 3 or word.isdigit():
                words.add(word.casefold())
    return frozenset(words)


def clean_text(value: str, words: frozenset[str], vr: str) -> str:
    """`value` with identifying words and long digit runs replaced (CS: removed, keeping it valid)."""
    mark = "" if vr == "CS" else "*"

    def word(m: re.Match[str]) -> str:
        return mark if m.group(0).casefold() in words else m.group(0)

    cleaned = _DIGITS.sub(mark, _WORD.sub(word, value))
    if vr == "CS":
        cleaned = " ".join(cleaned.split())
    return cleaned
