"""The transcoder: derived copies of stored instances, as the policy says, driven by domain events.

`InstanceStored` → the policy's targets for the instance → each copy made (once) under
`{partition}/derived/…` and recorded in the catalog with the ETag of the original it was made from.
Level-triggered like the indexer: the event says which instance; the store says what it is now. An
event for a version that was replaced since does nothing (the newer version's event makes its copies);
copies of an older version are remade, or dropped when the policy no longer asks for them.
`InstanceDeleted` → the instance's copies go, unless the original is stored again.

The same service runs in the Lambda (`functions/transcoder`, EventBridge → SQS) and in `pacs up`'s
worker (`pacs.services.transcode_worker`, the embedded event log).
"""

from __future__ import annotations

import enum
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydicom

from pacs.codecs import TranscodeError
from pacs.events.instance_ref import InstanceRef
from pacs.events.publisher import INSTANCE_DELETED, INSTANCE_STORED
from pacs.services.derived import CopyResult, DerivedCopies
from pacs.services.transcode_policy import InstanceFacts, Policy
from pacs.storage.port import BlobStore

log = logging.getLogger("pacs.transcoder")

#: The detail types the transcoder follows.
DETAIL_TYPES = (INSTANCE_STORED, INSTANCE_DELETED)


class PermanentFailure(Exception):
    """This event can never succeed (a corrupt or undecodable original, a malformed event): it is
    dead-lettered at once with the reason instead of being retried."""


class TranscodeOutcome(enum.StrEnum):
    IGNORED = "ignored"  # not an event the transcoder follows, or another partition
    NO_RULE = "no-rule"  # the policy asks for nothing
    SUPERSEDED = "superseded"  # the original changed (or went) since the event
    DONE = "done"  # copies made (or already there)
    REMOVED = "removed"  # copies of a deleted instance dropped


@dataclass(frozen=True, slots=True)
class TranscodeReport:
    outcome: TranscodeOutcome
    copies: tuple[CopyResult, ...] = field(default_factory=tuple)

    @property
    def made(self) -> int:
        return sum(1 for c in self.copies if c.outcome in ("made", "remade"))


class TranscoderService:
    def __init__(self, store: BlobStore, catalog: object, policy: Policy,
                 partitions: frozenset[str] | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.policy = policy
        #: Partitions served (None: any the events name).
        self.partitions = partitions

    def copies(self, partition: str) -> DerivedCopies:
        return DerivedCopies(self.store, partition, self.catalog)

    def handle(self, detail_type: str, detail: Mapping[str, Any]) -> TranscodeReport:
        """Do what one domain event asks. Raises PermanentFailure for an event that can never succeed,
        any other exception for one worth retrying (the store or catalog did not answer)."""
        if detail_type not in DETAIL_TYPES:
            return TranscodeReport(TranscodeOutcome.IGNORED)
        ref = InstanceRef.from_detail(detail, PermanentFailure)
        if self.partitions is not None and ref.partition not in self.partitions:
            return TranscodeReport(TranscodeOutcome.IGNORED)
        if detail_type == INSTANCE_DELETED:
            return self._deleted(ref)
        return self._stored(ref, detail)

    def _deleted(self, ref: InstanceRef) -> TranscodeReport:
        if self.store.head(ref.key) is not None:  # stored again since: its own event decides
            return TranscodeReport(TranscodeOutcome.SUPERSEDED)
        self.copies(ref.partition).remove(ref.study, ref.series, ref.sop)
        return TranscodeReport(TranscodeOutcome.REMOVED)

    def _stored(self, ref: InstanceRef, detail: Mapping[str, Any]) -> TranscodeReport:
        head = self.store.head(ref.key)
        if head is None or (ref.etag and head.etag != ref.etag):
            return TranscodeReport(TranscodeOutcome.SUPERSEDED)
        data: bytes | None = None
        modality = detail.get("modality")
        if modality is None and self.policy.needs_modality:  # an event from before `modality` was added
            data = self.store.get(ref.key)
            modality = _modality(data)
        facts = InstanceFacts(
            partition=ref.partition, modality=str(modality or ""),
            sop_class_uid=str(detail.get("sopClassUID") or ""),
            transfer_syntax_uid=str(detail.get("transferSyntaxUID") or ""),
            size=int(detail.get("size") or head.size),
        )
        targets = [(t.syntax, t.options) for t in self.policy.targets(facts)]
        copies = self.copies(ref.partition)
        try:
            results = copies.refresh(head, ref.study, ref.series, ref.sop, targets, data=data,
                                     drop_others=True)
        except TranscodeError as exc:
            raise PermanentFailure(f"{ref.key}: {exc}") from exc
        if not targets and not results:
            return TranscodeReport(TranscodeOutcome.NO_RULE)
        for r in results:
            log.info("derived %s: %s %s (%s)", ref.sop, r.outcome, r.key, r.syntax)
        return TranscodeReport(TranscodeOutcome.DONE, tuple(results))


def _modality(data: bytes) -> str:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["Modality"])
    except Exception as exc:
        raise PermanentFailure(f"the original cannot be read: {type(exc).__name__}: {exc}") from exc
    return str(ds.get("Modality", "") or "")
