"""The Catalog port: studies, series and instances, with the access patterns of DESIGN.md.

Adapters: `catalog/sqlite.py` (embedded) and `catalog/dynamodb.py` (AWS, pynamodb). Both must
pass `tests/unit/test_catalog_contract.py`. No adapter scans a whole table on a request path: it
uses the most selective index for the conditions given, then filters with `pacs.catalog.matching`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from pacs.catalog.matching import Condition
from pacs.catalog.records import (
    CatalogTotals,
    DerivedCopyRow,
    DerivedOutcome,
    IndexedInstance,
    InstanceRow,
    QueryPage,
    SeriesRow,
    StudyRow,
    UpsertOutcome,
)


class Catalog(Protocol):
    def upsert_instance(self, item: IndexedInstance) -> UpsertOutcome:
        """Record an instance, atomically with its study and series aggregates.

        - absent → "inserted": instance row written, series/study created if needed, counters
          (instances, series, bytes) incremented, modality and SOP class added;
        - present with the same etag → "unchanged" (a duplicate delivery is a no-op);
        - present with another etag and an older `sequencer` than `item`'s → "replaced": the row is
          overwritten, the byte counters move by the size difference, counts stay;
        - present with a newer or equal `sequencer` → "stale": nothing changes.
        Study and series attributes are refreshed from `item` whenever the instance is written.
        """
        ...

    def remove_instance(self, partition: str, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Delete an instance row and update aggregates; empty series and studies disappear.

        Returns False (and changes nothing) when the instance was not catalogued.
        """
        ...

    def get_study(self, partition: str, study_uid: str) -> StudyRow | None: ...

    def get_instance(
        self, partition: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> InstanceRow | None: ...

    def query_studies(
        self,
        partition: str,
        conditions: Sequence[Condition],
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> QueryPage[StudyRow]:
        """Studies matching every condition (on study attributes and aggregates), newest first
        (StudyDate, StudyTime descending; undated last), then `offset`/`limit`."""
        ...

    def query_series(
        self,
        partition: str,
        study_uid: str,
        conditions: Sequence[Condition],
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> QueryPage[SeriesRow]:
        """Series of one study matching every condition, by SeriesNumber then UID."""
        ...

    def query_instances(
        self,
        partition: str,
        study_uid: str,
        series_uid: str | None,
        conditions: Sequence[Condition],
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> QueryPage[InstanceRow]:
        """Instances of a study (or of one series) matching every condition, by series then
        InstanceNumber then UID."""
        ...

    def locate_instances(self, partition: str, sop_uids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """Where instances are, from their SOP Instance UIDs alone: {sop_uid: [(study_uid, series_uid)]}
        for those catalogued (storage commitment names instances without their study)."""
        ...

    def missing_keys(self, partition: str, keys: Iterable[str]) -> set[str]:
        """Of the given instance object keys, those not catalogued (reconciliation)."""
        ...

    def check(self) -> None:
        """Raise unless the catalog's storage answers now (health checks)."""
        ...

    def totals(self, partition: str) -> CatalogTotals | None:
        """Studies, series, instances and bytes of a partition, when the catalog keeps them at a small
        cost (monitoring); None otherwise (DynamoDB: no table scan, the figures are left to CloudWatch)."""
        ...

    def close(self) -> None: ...


class DerivedCatalog(Protocol):
    """Records of derived copies (other transfer syntaxes of an original), beside the catalog: both
    adapters (SqliteCatalog, DynamoCatalog) implement it; `pacs.services.derived` uses it."""

    def put_derived(self, row: DerivedCopyRow) -> DerivedOutcome:
        """Record a copy, conditionally: absent → "inserted"; present with the same source ETag →
        "unchanged" (nothing written: the same event twice records one copy); present with another
        source ETag → "replaced"."""
        ...

    def get_derived(self, partition: str, study_uid: str, series_uid: str, sop_uid: str, syntax: str,
                    variant: str = "") -> DerivedCopyRow | None: ...

    def list_derived(self, partition: str, study_uid: str, series_uid: str | None = None,
                     sop_uid: str | None = None) -> list[DerivedCopyRow]:
        """The copies of a study (of one series, of one instance), by series, instance, syntax."""
        ...

    def remove_derived(self, partition: str, study_uid: str, series_uid: str, sop_uid: str, syntax: str,
                       variant: str = "") -> bool:
        """Forget one copy; False when it was not recorded."""
        ...
