"""Object keys of the storage layout (DESIGN.md ◆):

    {partition}/studies/{StudyUID}/series/{SeriesUID}/instances/{SOPUID}.dcm
    {partition}/derived/{StudyUID}/...
    {partition}/export/{job}/...

Every UID is checked before it becomes part of a key (`pacs.dicom.uids.check_uid`: key-safe, so a
key never leaves its prefix); `parse_instance_key` is the inverse and
rejects anything that is not an original instance (only those trigger indexing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pacs.dicom.uids import check_uid
from pacs.errors import InvalidUID

PARTITION_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_INSTANCE_KEY = re.compile(
    r"(?P<partition>[^/]+)/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/instances/(?P<sop>[^/]+)\.dcm"
)


def check_partition(partition: str) -> str:
    """A partition (tenant) name: lower-case letters, digits and '-', 1-63 characters."""
    if not PARTITION_PATTERN.fullmatch(partition):
        raise ValueError(f"partition {partition!r} must match {PARTITION_PATTERN.pattern}")
    return partition


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """The identity of an original instance in the object store."""

    partition: str
    study_uid: str
    series_uid: str
    sop_uid: str

    def __post_init__(self) -> None:
        check_partition(self.partition)
        for value, name in ((self.study_uid, "StudyInstanceUID"), (self.series_uid, "SeriesInstanceUID"),
                            (self.sop_uid, "SOPInstanceUID")):
            if check_uid(value, name) != value:  # DICOM padding (NUL, space) never reaches a key
                raise InvalidUID(f"{name} {value!r} is padded")

    @property
    def key(self) -> str:
        return (
            f"{self.partition}/studies/{self.study_uid}/series/{self.series_uid}"
            f"/instances/{self.sop_uid}.dcm"
        )


def instance_key(partition: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The key of an original Part 10 object; raises InvalidUID for any bad UID."""
    return InstanceKey(partition, study_uid, series_uid, sop_uid).key


def parse_instance_key(key: str) -> InstanceKey | None:
    """The InstanceKey a key names, or None when it is not an original instance under studies/."""
    m = _INSTANCE_KEY.fullmatch(key)
    if m is None:
        return None
    try:
        return InstanceKey(m["partition"], m["study"], m["series"], m["sop"])
    except (ValueError, InvalidUID):
        return None


def partition_studies_prefix(partition: str) -> str:
    return f"{check_partition(partition)}/studies/"
