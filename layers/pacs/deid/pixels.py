"""Clean Pixel Data: burned-in regions blanked by rule, objects that no rule covers held back.

INTERFACE SKELETON (issue 13): `PixelRules.clean` is what the engine calls under the Clean Pixel
Data option; the rules' matching, blanking and re-encoding replace this placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset


@dataclass(frozen=True, slots=True)
class PixelRule:
    """Regions (x0, y0, x1, y1: columns and rows, end exclusive) to blank in the matching images;
    an empty criterion matches anything."""

    regions: tuple[tuple[int, int, int, int], ...]
    modality: str = ""
    manufacturer: str = ""
    model: str = ""
    rows: int = 0
    columns: int = 0


@dataclass(frozen=True, slots=True)
class PixelRules:
    rules: tuple[PixelRule, ...] = field(default_factory=tuple)

    def clean(self, ds: Dataset) -> bool:
        """Blank the regions of the first matching rule in `ds` (in place, the pixels re-encoded in
        their transfer syntax); True when it changed the pixels. Raises HeldBack for an image with
        burned-in annotation (YES, or a modality known to burn in) that no rule covers."""
        raise NotImplementedError
