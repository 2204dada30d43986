"""Delete a study, series or instance: objects, catalog rows, replaced versions and derived data.

Objects are deleted from the store, then each key goes through the indexer's own removal path
synchronously (the same level-triggered code the ObjectRemoved event runs later, which then finds
nothing left to do): the catalog, its aggregates and the derived artefacts are consistent when the
call returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacs.events.model import ObjectEvent, sequencer_now
from pacs.services.derived import DerivedCopies
from pacs.services.indexer import IndexerService
from pacs.services.retrieve import RetrieveService
from pacs.storage.keys import check_partition
from pacs.storage.port import BlobStore


@dataclass(frozen=True, slots=True)
class DeleteReport:
    instances: int
    history_versions: int


class DeleteService:
    def __init__(self, store: BlobStore, indexer: IndexerService, partition: str = "default") -> None:
        self.store = store
        self.indexer = indexer
        self.partition = check_partition(partition)
        self.retrieve = RetrieveService(store, indexer.catalog, partition)

    def delete(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> DeleteReport:
        """Delete what the UIDs name; raises NotFound when nothing is catalogued there."""
        rows = self.retrieve.instances(study_uid, series_uid, sop_uid)
        for row in rows:
            self.store.delete(row.key)
            self.indexer.handle(ObjectEvent("removed", row.key, sequencer=sequencer_now()))
        history = 0
        for row in rows:
            prefix = f"{self.partition}/history/{row.study_uid}/{row.series_uid}/{row.sop_uid}/"
            for old in list(self.store.list(prefix)):
                self.store.delete(old.key)
                history += 1
        # Derived copies (other transfer syntaxes) of each deleted instance, and their records.
        copies = DerivedCopies(self.store, self.partition, self.indexer.catalog)
        for row in rows:
            copies.remove(row.study_uid, row.series_uid, row.sop_uid)
        # Packed response bodies of the study are caches keyed by what they held: drop them; and
        # when the study is gone, everything derived from it.
        derived = f"{self.partition}/derived/{study_uid}/"
        gone = self.indexer.catalog.get_study(self.partition, study_uid) is None
        for blob in list(self.store.list(derived if gone else derived + "packed/")):
            self.store.delete(blob.key)
        return DeleteReport(len(rows), history)
