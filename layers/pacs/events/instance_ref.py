"""The instance an event detail (`InstanceStored`, `InstanceDeleted`) names, checked: what the
transcoder and the anonymizer both read from their events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pacs.errors import PacsError
from pacs.storage.keys import check_partition, instance_key


@dataclass(frozen=True, slots=True)
class InstanceRef:
    partition: str
    study: str
    series: str
    sop: str
    key: str
    #: The version the event speaks of ("" when it names none).
    etag: str = ""

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any], failure: type[Exception]) -> InstanceRef:
        """The instance of an event detail; raises `failure` (the caller's permanent failure) when the
        detail names none, or a key that is not the instance's."""
        try:
            partition = check_partition(str(detail["partition"]))
            study, series, sop = (str(detail[k]) for k in
                                  ("studyInstanceUID", "seriesInstanceUID", "sopInstanceUID"))
            key = instance_key(partition, study, series, sop)
        except (KeyError, ValueError, PacsError) as exc:
            raise failure(f"not an instance event detail: {type(exc).__name__}: {exc}") from None
        if detail.get("key") not in (None, key):
            raise failure(f"the detail's key {detail.get('key')!r} is not the instance's {key!r}")
        return cls(partition, study, series, sop, key, str(detail.get("etag") or ""))
