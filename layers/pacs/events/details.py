"""The details of the domain events the indexer emits (schemas in the README, "Events").

InstanceStored / InstanceDeleted describe one instance; StudyUpdated follows each of them with the
study's aggregates as the catalog holds them after the change (zeros and `deleted: true` once the
last instance is gone).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pacs.catalog.port import Catalog
from pacs.catalog.records import InstanceRow
from pacs.events.publisher import INSTANCE_DELETED, INSTANCE_STORED, STUDY_UPDATED, EventPublisher


@runtime_checkable
class BatchPublisher(Protocol):
    """A publisher that hands several events over at once (one PutEvents, one transaction)."""

    def publish_batch(self, events: list[tuple[str, dict[str, Any]]]) -> None: ...


def instance_detail(row: InstanceRow, modality: str | None = None, calling_ae: str | None = None
                    ) -> dict[str, Any]:
    """The detail of InstanceStored / InstanceDeleted; `modality` (the series') when known, `callingAE`
    (who sent it: the stored file's (0002,0016) Source Application Entity Title) when recorded."""
    detail: dict[str, Any] = {
        "partition": row.partition,
        "studyInstanceUID": row.study_uid,
        "seriesInstanceUID": row.series_uid,
        "sopInstanceUID": row.sop_uid,
        "sopClassUID": row.sop_class_uid,
        "transferSyntaxUID": row.transfer_syntax_uid,
        "key": row.key,
        "size": row.size,
        "etag": row.etag,
        "versionId": row.version_id,
    }
    if modality is not None:
        detail["modality"] = modality
    if calling_ae:
        detail["callingAE"] = calling_ae
    return detail


def study_detail(
    catalog: Catalog, partition: str, study_uid: str, cause: str, sop_uid: str
) -> dict[str, Any]:
    study = catalog.get_study(partition, study_uid)
    return {
        "partition": partition,
        "studyInstanceUID": study_uid,
        "deleted": study is None,
        "numberOfSeries": study.n_series if study else 0,
        "numberOfInstances": study.n_instances if study else 0,
        "bytes": study.size if study else 0,
        "modalities": sorted(study.modalities) if study else [],
        "sopClasses": sorted(study.sop_classes) if study else [],
        "cause": {"detailType": cause, "sopInstanceUID": sop_uid},
    }


def announcement(catalog: Catalog, row: InstanceRow, *, removed: bool, replaced: bool = False,
                 modality: str | None = None, calling_ae: str | None = None
                 ) -> list[tuple[str, dict[str, Any]]]:
    """InstanceStored (or InstanceDeleted) for `row`, then StudyUpdated for its study: (detail type,
    detail) pairs, in the order they are published."""
    detail = instance_detail(row, modality, calling_ae)
    if removed:
        kind = INSTANCE_DELETED
    else:
        kind = INSTANCE_STORED
        detail["replaced"] = replaced
    study = study_detail(catalog, row.partition, row.study_uid, kind, row.sop_uid)
    return [(kind, detail), (STUDY_UPDATED, study)]


def announce(events: EventPublisher, catalog: Catalog, row: InstanceRow, *, removed: bool,
             replaced: bool = False) -> None:
    """Publish `announcement(...)`: in one batch when the publisher takes batches."""
    pair = announcement(catalog, row, removed=removed, replaced=replaced)
    if isinstance(events, BatchPublisher):
        events.publish_batch(pair)
    else:
        for detail_type, d in pair:
            events.publish(detail_type, d)
