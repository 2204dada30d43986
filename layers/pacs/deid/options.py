"""The de-identification profile: PS3.15 Annex E's Basic Application Level Confidentiality Profile and
its options (Table E.1-1's columns), and the named profiles built from them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DeidError(Exception):
    """The object cannot be de-identified (unreadable, or an option that cannot be honoured)."""


class HeldBack(DeidError):
    """The object may carry identity the profile cannot remove (burned-in text that no pixel rule
    covers): it is held back and reported, never exported."""


class Option(enum.StrEnum):
    """A PS3.15 Annex E option; the value is its name on the command line and in JSON."""

    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_UIDS = "retain-uids"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain-longitudinal-full-dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain-longitudinal-modified-dates"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_GRAPHICS = "clean-graphics"
    CLEAN_PIXEL_DATA = "clean-pixel-data"


#: The key of each option's column in `data/ps315-annex-e.json` (Clean Pixel Data has no column).
COLUMNS: dict[Option, str] = {
    Option.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    Option.RETAIN_UIDS: "rtnUIDsOpt",
    Option.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    Option.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: "rtnLongFullDatesOpt",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtnLongModifDatesOpt",
    Option.CLEAN_DESCRIPTORS: "cleanDescOpt",
    Option.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    Option.CLEAN_GRAPHICS: "cleanGraphOpt",
}

#: Named profiles: a name stands for the basic profile plus these options.
NAMED: dict[str, frozenset[Option]] = {
    "basic": frozenset(),
    # What research groups usually ask for: intervals between studies kept, descriptions cleaned.
    "research": frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS,
                           Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}),
}


@dataclass(frozen=True, slots=True)
class Profile:
    """The basic profile and the options in use."""

    options: frozenset[Option] = frozenset()
    name: str = "basic"

    @classmethod
    def parse(cls, text: str, options: list[str] | tuple[str, ...] = ()) -> Profile:
        """`basic`, `research`, `basic+retain-uids+clean-descriptors`, plus `options` by name.
        Raises ValueError naming what is unknown, and when both longitudinal options are asked."""
        name, *extra = [p.strip() for p in (text or "basic").split("+")]
        if name not in NAMED:
            raise ValueError(f"unknown profile {name!r}: use one of {', '.join(NAMED)}")
        chosen = set(NAMED[name])
        for item in (*extra, *options):
            try:
                chosen.add(Option(item.strip()))
            except ValueError:
                known = ", ".join(o.value for o in Option)
                raise ValueError(f"unknown option {item!r}: use {known}") from None
        both = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if both <= chosen:
            raise ValueError("retain-longitudinal-full-dates and -modified-dates exclude each other")
        return cls(frozenset(chosen), name)

    def __contains__(self, option: object) -> bool:
        return option in self.options

    def describe(self) -> str:
        extra = self.options - NAMED.get(self.name, frozenset())
        return "+".join([self.name, *sorted(o.value for o in extra)])
