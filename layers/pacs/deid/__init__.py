"""De-identification (PS3.15 Annex E): the Basic Application Level Confidentiality Profile with every
option, as data (`data/ps315-annex-e.json`, DICOM 2024b, MIT, see its LICENSE file).

- `options`: the profile and its options; `engine`: the de-identifier (data set / Part 10 in, copy out);
- `pixels`: Clean Pixel Data (burned-in regions by rule); `secrets`: the per-project keys;
- `crosswalk`: original → pseudonym pairs, encrypted, for authorised re-identification.
"""

from pacs.deid.engine import CrosswalkWriter, Deidentified, Deidentifier, DeidSettings
from pacs.deid.options import DeidError, HeldBack, Option, Profile
from pacs.deid.pixels import PixelRule, PixelRules

__all__ = ["CrosswalkWriter", "DeidError", "DeidSettings", "Deidentified", "Deidentifier", "HeldBack",
           "Option", "PixelRule", "PixelRules", "Profile"]
