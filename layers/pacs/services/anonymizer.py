"""The event-driven anonymizer: de-identified copies of stored instances, as the rules say.

`InstanceStored` (or `StudyUpdated`, for rules with that trigger: every instance of the study) → the
rules matching the instance (partition, calling AE, modality, SOP class) → `pacs.deid.Deidentifier`
under the rule's profile and project key → the copy INGESTED into the rule's destination partition
(indexed there, searchable) or written to the exports store as Part 10 under
`{partition}/export/rules/{rule}/files/{study}/{series}/{sop}.dcm` (the de-identified UIDs).

- **Never modifies an original**; never reads its own output: an event from a partition no rule takes
  is ignored, and rules that would lead a partition back into itself are refused when loaded.
- **Level-triggered**: the store says what the instance is now; an event for a replaced version
  does nothing (the newer version's event makes its copy).
- **Idempotent**: each version taken is recorded in the exports store
  (`…/rules/{rule}/state/{study}/{series}/{sop}/{token}.json`, the token a hash of the original's ETag
  and the rule's profile, project and destination; the record names the copy); a repeated event finds
  the record and does nothing (a copy removed by its owner is not made again unless the original or the
  rule changes); were it to run again, the same bytes are stored (a no-op). A `StudyUpdated` sweep lists
  each rule's records of the study once, and records the versions no rule matches as skipped: a study of
  N instances costs N reads in all, not N per event.
- **Held back** (`HeldBack`: burned-in text no pixel rule covers): nothing is exported; a JSON record
  `{partition}/export/rules/{rule}/held/{study}/{series}/{sop}.json` says why (`pacs anonymizer held`).
- **DeidError** (an unreadable original, an option that cannot be honoured) → `PermanentFailure`:
  dead-lettered at once with the reason. Other errors (store, catalog) are worth a retry.
- `InstanceDeleted` is ignored: a de-identified copy is an export with a life of its own (the research
  partition's or the export's owner removes it), and it carries nothing that leads back to the original.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.errors import InvalidDicomError

from pacs.config import Settings
from pacs.deid import DeidError, HeldBack
from pacs.deid.pixels import PixelRules
from pacs.deid.project import Deidentifiers, ProjectKeys, pixel_rules, project_keys
from pacs.dicom.part10 import read_header
from pacs.dicom.uids import UidPolicy, check_uid
from pacs.errors import InvalidDataset, PacsError, StorageFailure
from pacs.events.instance_ref import InstanceRef
from pacs.events.publisher import INSTANCE_STORED, STUDY_UPDATED, EventPublisher
from pacs.services.deid_rules import DeidRule, DeidRules, InstanceFacts
from pacs.services.indexer import IndexerService
from pacs.services.ingest import DuplicatePolicy, IngestService, Outcome
from pacs.storage.keys import parse_instance_key, partition_studies_prefix
from pacs.storage.port import AlreadyExists, BlobInfo, BlobStore

log = logging.getLogger("pacs.anonymizer")

#: The detail types the anonymizer follows.
DETAIL_TYPES = (INSTANCE_STORED, STUDY_UPDATED)


class PermanentFailure(Exception):
    """This event can never succeed (a corrupt original, an option that cannot be honoured, a malformed
    event): dead-lettered at once with the reason instead of being retried."""


class AnonymizeOutcome(enum.StrEnum):
    IGNORED = "ignored"  # not an event followed, or no rule takes its partition
    NO_RULE = "no-rule"  # rules take the partition, none matches the instance
    SUPERSEDED = "superseded"  # the original changed (or went) since the event
    DONE = "done"  # every matching rule ran (see the results)
    UP_TO_DATE = "up-to-date"  # a study sweep found every instance's version recorded already


class RuleOutcome(enum.StrEnum):
    STORED = "stored"  # a copy made
    UNCHANGED = "unchanged"  # the copy already there (the same event twice)
    HELD = "held"  # held back, recorded


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    sop_uid: str
    outcome: RuleOutcome
    #: The copy's key (in the destination partition or the exports store); the held record's when held.
    key: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AnonymizeReport:
    outcome: AnonymizeOutcome
    results: tuple[RuleResult, ...] = field(default_factory=tuple)

    def count(self, outcome: RuleOutcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)


# -- where things go ----------------------------------------------------------------------------------


def rule_prefix(partition: str, rule: str) -> str:
    return f"{partition}/export/rules/{rule}/"


def held_key(partition: str, rule: str, study: str, series: str, sop: str) -> str:
    return f"{rule_prefix(partition, rule)}held/{study}/{series}/{sop}.json"


def state_prefix(partition: str, rule: str, study: str) -> str:
    return f"{rule_prefix(partition, rule)}state/{study}/"


def state_key(partition: str, rule: DeidRule, study: str, series: str, sop: str, etag: str) -> str:
    """The record that this version of the original (its ETag) was taken by the rule as it is now
    (profile, project, destination): `state/{study}/{series}/{sop}/{token}.json`."""
    token = hashlib.blake2b("\0".join((etag, rule.profile.describe(), rule.project, rule.destination()))
                            .encode(), digest_size=12).hexdigest()
    return f"{state_prefix(partition, rule.name, study)}{series}/{sop}/{token}.json"


def export_key(partition: str, rule: str, study: str, series: str, sop: str) -> str:
    return f"{rule_prefix(partition, rule)}files/{study}/{series}/{sop}.dcm"


class AnonymizerService:
    def __init__(self, store: BlobStore, catalog: Any, rules: DeidRules, keys: ProjectKeys, *,
                 exports: BlobStore | None = None, events: EventPublisher | None = None,
                 uid_policy: str = "key-safe", pixel_rules: PixelRules | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.rules = rules
        #: Where exports (and crosswalks) go (the exports bucket on AWS); the originals' store when None.
        self.exports = exports if exports is not None else store
        self.deidentifiers = Deidentifiers(keys, pixel_rules or PixelRules(), self.exports)
        self.events = events
        self.uid_policy = UidPolicy(uid_policy)
        self._ingest: dict[str, IngestService] = {}

    @classmethod
    def from_backend(cls, backend: Any, rules: DeidRules, keys: ProjectKeys | None = None
                     ) -> AnonymizerService:
        """On a `pacs.backends.Backend`: its store, catalog, exports store and event publisher; the
        installation's secret and pixel rules."""
        settings: Settings = backend.settings
        return cls(backend.store, backend.catalog, rules, keys or project_keys(settings),
                   exports=backend.exports_store, events=backend.events, uid_policy=settings.uid_policy,
                   pixel_rules=pixel_rules(settings))

    def handle(self, detail_type: str, detail: Mapping[str, Any]) -> AnonymizeReport:
        """Do what one domain event asks. Raises PermanentFailure for an event that can never succeed,
        any other exception for one worth retrying (the store or catalog did not answer)."""
        if detail_type == INSTANCE_STORED:
            return self._instance_stored(detail)
        if detail_type == STUDY_UPDATED:
            return self._study_updated(detail)
        return AnonymizeReport(AnonymizeOutcome.IGNORED)

    def _instance_stored(self, detail: Mapping[str, Any]) -> AnonymizeReport:
        partition = str(detail.get("partition") or "")
        rules = self.rules.for_trigger(INSTANCE_STORED, partition)
        if not rules:  # incl. the copies this service ingests into destination partitions
            return AnonymizeReport(AnonymizeOutcome.IGNORED)
        ref = InstanceRef.from_detail(detail, PermanentFailure)
        etag = ref.etag
        head = self.store.head(ref.key)
        if head is None or (etag and head.etag != etag):
            return AnonymizeReport(AnonymizeOutcome.SUPERSEDED)
        facts = None
        if "modality" in detail and ("callingAE" in detail or not any(r.needs_calling_ae for r in rules)):
            facts = InstanceFacts(partition, str(detail.get("callingAE") or ""),
                                  str(detail["modality"] or ""), str(detail.get("sopClassUID") or ""))
        results = self._instance(ref, head, rules, facts)
        return AnonymizeReport(AnonymizeOutcome.DONE if results else AnonymizeOutcome.NO_RULE, tuple(results))

    def _study_updated(self, detail: Mapping[str, Any]) -> AnonymizeReport:
        partition = str(detail.get("partition") or "")
        rules = self.rules.for_trigger(STUDY_UPDATED, partition)
        if not rules or detail.get("deleted"):
            return AnonymizeReport(AnonymizeOutcome.IGNORED)
        try:
            study = str(detail["studyInstanceUID"])
            check_uid(study, "StudyInstanceUID")
            prefix = f"{partition_studies_prefix(partition)}{study}/series/"
        except (KeyError, ValueError, PacsError) as exc:
            raise PermanentFailure(f"not a study event detail: {type(exc).__name__}: {exc}") from None
        listed = {rule.name: {i.key for i in self.exports.list(state_prefix(partition, rule.name, study))}
                  for rule in rules}  # one listing per rule: instances done (or skipped) need no read
        results: list[RuleResult] = []
        for info in list(self.store.list(prefix)):
            k = parse_instance_key(info.key)
            if k is None:
                continue
            ref = InstanceRef(k.partition, k.study_uid, k.series_uid, k.sop_uid, info.key)
            results += self._instance(ref, info, rules, None, listed)
        if not results:  # nothing new: every version recorded already, or none matched
            return AnonymizeReport(AnonymizeOutcome.UP_TO_DATE if any(listed.values()) else
                                   AnonymizeOutcome.NO_RULE)
        return AnonymizeReport(AnonymizeOutcome.DONE, tuple(results))

    # -- one instance ------------------------------------------------------------------------------

    def _instance(self, ref: InstanceRef, head: BlobInfo, rules: list[DeidRule], facts: InstanceFacts | None,
                  listed: dict[str, set[str]] | None = None) -> list[RuleResult]:
        """Every rule that takes this version of the instance: recorded ones first (a version's facts
        never change: no need to read it again), then the header read (ranged) for the others' matching,
        then the whole object for those that match. In a study sweep (`listed`: each rule's records of
        the study) a version no rule matches is recorded as skipped, so the next sweep reads nothing."""
        results: list[RuleResult] = []
        pending: list[DeidRule] = []
        for rule in rules:
            key = state_key(ref.partition, rule, ref.study, ref.series, ref.sop, head.etag)
            if listed is not None:
                if key in listed[rule.name]:
                    continue  # done (or skipped) for this version already
            elif self.exports.head(key) is not None:
                results.append(RuleResult(rule.name, ref.sop, RuleOutcome.UNCHANGED, self._copy_of(key)))
                continue
            pending.append(rule)
        if not pending:
            return results
        if facts is None:
            facts = self._facts(ref)
        data: bytes | None = None
        for rule in pending:
            if not rule.matches(facts):
                if listed is not None:
                    self._record(rule, ref, head, copy="")
                continue
            if data is None:
                data = self.store.get(ref.key)
            results.append(self._apply(rule, ref, head, data))
        return results

    def _copy_of(self, state: str) -> str:
        try:
            return str(orjson.loads(self.exports.get(state)).get("copy") or "")
        except (ValueError, PacsError):
            return ""

    def _record(self, rule: DeidRule, ref: InstanceRef, head: BlobInfo, *, copy: str) -> None:
        """Record that this version was taken by the rule (`copy`: where its copy went; "": skipped,
        the rule did not match)."""
        key = state_key(ref.partition, rule, ref.study, ref.series, ref.sop, head.etag)
        self.exports.put(key, orjson.dumps({
            "rule": rule.name, "etag": head.etag, "profile": rule.profile.describe(), "project": rule.project,
            "destination": rule.destination(), "copy": copy,
        }), content_type="application/json")

    def _facts(self, ref: InstanceRef) -> InstanceFacts:
        """Modality, SOP class and calling AE of a stored original, from its header alone."""
        try:
            with self.store.open(ref.key) as fp:
                ds = read_header(fp)
        except (InvalidDataset, InvalidDicomError, ValueError, struct.error, EOFError) as exc:
            raise PermanentFailure(f"{ref.key}: the original cannot be read: {type(exc).__name__}: {exc}"
                                   ) from exc
        meta = getattr(ds, "file_meta", None)
        calling = meta.get("SourceApplicationEntityTitle", "") if meta is not None else ""
        if isinstance(calling, bytes):
            calling = calling.decode("ascii", "replace")
        return InstanceFacts(ref.partition, str(calling or "").strip(), str(ds.get("Modality", "") or ""),
                             str(ds.get("SOPClassUID", "") or ""))

    def _apply(self, rule: DeidRule, ref: InstanceRef, head: BlobInfo, data: bytes) -> RuleResult:
        deid = self.deidentifiers.make(rule.profile, rule.project, partition=ref.partition,
                                       crosswalk=rule.crosswalk)
        try:
            out = deid.part10(data)
        except HeldBack as exc:
            key = held_key(ref.partition, rule.name, ref.study, ref.series, ref.sop)
            self.exports.put(key, orjson.dumps({
                "rule": rule.name, "partition": ref.partition, "studyInstanceUID": ref.study,
                "seriesInstanceUID": ref.series, "sopInstanceUID": ref.sop, "key": ref.key, "etag": head.etag,
                "reason": str(exc), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }), content_type="application/json")
            log.warning("%s held back by rule %s: %s", ref.key, rule.name, exc)
            return RuleResult(rule.name, ref.sop, RuleOutcome.HELD, key, str(exc))
        except DeidError as exc:
            raise PermanentFailure(f"{ref.key}: rule {rule.name}: {exc}") from exc
        if rule.to_partition is not None:
            try:
                stored = self._ingest_into(rule.to_partition).ingest(out.data)
            except StorageFailure:
                raise
            except PacsError as exc:
                raise PermanentFailure(f"{ref.key}: rule {rule.name}: the copy cannot be stored in "
                                       f"{rule.to_partition}: {exc}") from exc
            copy, made = stored.key, stored.outcome is not Outcome.IDENTICAL
        else:
            try:  # nothing from a data set reaches a key unchecked
                uids = [check_uid(u, n) for u, n in ((out.study_uid, "StudyInstanceUID"),
                                                     (out.series_uid, "SeriesInstanceUID"),
                                                     (out.sop_uid, "SOPInstanceUID"))]
            except PacsError as exc:
                raise PermanentFailure(f"{ref.key}: rule {rule.name}: the copy's {exc}") from exc
            copy = export_key(ref.partition, rule.name, *uids)
            made = self._put_export(copy, out.data)
        self._record(rule, ref, head, copy=copy)
        log.info("%s de-identified by rule %s into %s", ref.key, rule.name, copy)
        return RuleResult(rule.name, ref.sop, RuleOutcome.STORED if made else RuleOutcome.UNCHANGED, copy)

    def _put_export(self, key: str, data: bytes) -> bool:
        """Write an exported copy; False when the same bytes are there already."""
        try:
            self.exports.put(key, data, if_absent=True)
            return True
        except AlreadyExists:
            pass
        if self.exports.get(key) == data:
            return False
        self.exports.put(key, data)
        return True

    def _ingest_into(self, partition: str) -> IngestService:
        if partition not in self._ingest:
            self._ingest[partition] = IngestService(
                self.store, partition=partition, duplicate_policy=DuplicatePolicy.REPLACE,
                indexer=IndexerService(self.store, self.catalog, self.events), uid_policy=self.uid_policy)
        return self._ingest[partition]

    # -- held-back records ------------------------------------------------------------------------

    def held(self, partition: str) -> list[dict[str, Any]]:
        """Every held-back record of the partition's rules (`pacs anonymizer held`)."""
        out = []
        for rule in self.rules.rules:
            if partition not in rule.partitions:
                continue
            prefix = f"{rule_prefix(partition, rule.name)}held/"
            for info in self.exports.list(prefix):
                try:
                    out.append(orjson.loads(self.exports.get(info.key)))
                except (ValueError, PacsError):
                    continue
        return out

