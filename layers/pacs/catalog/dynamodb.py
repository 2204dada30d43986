"""DynamoDB Catalog (AWS), with pynamodb: one table designed for the access patterns of DESIGN.md.

Items (mirror this in infra/; every key attribute is a string):

    PK = {partition}#{StudyUID}   SK = STUDY | SERIES#{SeriesUID} | INSTANCE#{SeriesUID}#{SOPUID}
    PK = {partition}#_meta        SK = MONTHS   (string set `months`: every yyyymm that has had studies)
    PK = {partition}#DERIVED#{StudyUID}  SK = {SeriesUID}#{SOPUID}#{syntax}#{variant}  (derived copies)

Partitions and UIDs never contain '#', so keys are unambiguous. Sparse GSIs, projected ALL; only
study items (and name aliases, below) carry their keys:

    patient    PatientPK   = {partition}#{PatientID}               DateSK = {StudyDate}#{StudyTime}#{StudyUID}
    accession  AccessionPK = {partition}#{AccessionNumber}         DateSK
    name       NamePK      = {partition}#{first char of name}      NameSK = {normalised name}
    date       DatePK      = {partition}#STUDY#{yyyymm | 000000}   DateSK
    sop        SopPK       = {partition}#{SOPInstanceUID}          SK     (instance items; keys only)

A PN query matches through any group (alphabetic, ideographic, phonetic) of any value, so every
normalised form (`matching.name_keys`) is indexed: the first on the study item, the others on small
alias items `SK = NAME#{form}` of the same study (listed in the study's `name_aliases`).

A study query uses the most selective of: StudyInstanceUID (BatchGet), AccessionNumber, PatientID,
PatientName literal prefix (`begins_with`; not with fuzzy matching), else the date index walked
month by month, newest first, page by page, stopping once `offset + limit + 1` rows matched (with the
StudyDate bounds as key conditions); never a whole-table read. Every candidate is then filtered
with the shared matcher. DICOM JSON attributes are stored as one orjson string per item.

Writes read the items concerned, then commit one TransactWriteItems whose conditions check what was
read (optimistic concurrency); a cancelled transaction is re-read and retried. Counters use ADD, so
duplicate, concurrent and out-of-order calls leave exact aggregates.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar, TypeVar

import orjson
from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UnicodeSetAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import TableError, TransactWriteError
from pynamodb.expressions.condition import Condition as DbCondition
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from pacs.catalog.derived_dynamodb import DynamoDerivedRecords
from pacs.catalog.matching import Condition, filter_page, name_keys, normalize_name
from pacs.catalog.records import (
    DicomJson,
    IndexedInstance,
    InstanceRow,
    QueryPage,
    SeriesRow,
    StudyRow,
    UpsertOutcome,
    first_value,
)
from pacs.dicom.uids import check_uid
from pacs.errors import CatalogConflict
from pacs.events.model import sequencer_order
from pacs.storage.keys import check_partition, parse_instance_key

PATIENT_NAME, PATIENT_ID, ACCESSION = "00100010", "00100020", "00080050"
STUDY_DATE, STUDY_TIME, STUDY_UID = "00080020", "00080030", "0020000D"
SERIES_NUMBER, INSTANCE_NUMBER = "00200011", "00200013"

STUDY_SK, META_SK, NAME_SK, UNDATED_MONTH = "STUDY", "MONTHS", "NAME#", "000000"
INDEX_PATIENT, INDEX_ACCESSION, INDEX_NAME, INDEX_DATE = "patient", "accession", "name", "date"
INDEX_SOP = "sop"
MAX_ATTEMPTS = 16
_KEY_MAX = 512  # GSI key values are capped well under DynamoDB's limits (2048 / 1024 bytes)
_MAX_ALIASES = 16  # of one study's names; a transaction holds at most 100 items
_RETRYABLE = {"ConditionalCheckFailed", "TransactionConflict", "ThrottlingError",
              "ProvisionedThroughputExceeded", "None"}

T = TypeVar("T")
#: One operation of a transaction: ("save" | "update" | "delete", item, condition, update actions).
_Op = tuple[str, "_Item", DbCondition | None, list[Action]]


# -- table model ------------------------------------------------------------------------------------


class _PatientIndex(GlobalSecondaryIndex["_Item"]):
    class Meta:
        index_name = INDEX_PATIENT
        projection = AllProjection()

    patient_pk = UnicodeAttribute(hash_key=True, attr_name="PatientPK")
    date_sk = UnicodeAttribute(range_key=True, attr_name="DateSK")


class _AccessionIndex(GlobalSecondaryIndex["_Item"]):
    class Meta:
        index_name = INDEX_ACCESSION
        projection = AllProjection()

    accession_pk = UnicodeAttribute(hash_key=True, attr_name="AccessionPK")
    date_sk = UnicodeAttribute(range_key=True, attr_name="DateSK")


class _NameIndex(GlobalSecondaryIndex["_Item"]):
    class Meta:
        index_name = INDEX_NAME
        projection = AllProjection()

    name_pk = UnicodeAttribute(hash_key=True, attr_name="NamePK")
    name_sk = UnicodeAttribute(range_key=True, attr_name="NameSK")


class _DateIndex(GlobalSecondaryIndex["_Item"]):
    class Meta:
        index_name = INDEX_DATE
        projection = AllProjection()

    date_pk = UnicodeAttribute(hash_key=True, attr_name="DatePK")
    date_sk = UnicodeAttribute(range_key=True, attr_name="DateSK")


class _SopIndex(GlobalSecondaryIndex["_Item"]):
    """Instances by SOP Instance UID alone (storage commitment names instances without their study)."""

    class Meta:
        index_name = INDEX_SOP
        projection = KeysOnlyProjection()

    sop_pk = UnicodeAttribute(hash_key=True, attr_name="SopPK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")


class _Item(Model):
    """Every item of the table (study, series, instance, meta); `_models` binds it to a table."""

    pk = UnicodeAttribute(hash_key=True, attr_name="PK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")
    attrs = UnicodeAttribute(null=True)
    #: Bumped by every write of the item: the optimistic-concurrency token.
    rev = NumberAttribute(null=True)
    # instance
    sop_class = UnicodeAttribute(null=True)
    tsuid = UnicodeAttribute(null=True)
    obj_key = UnicodeAttribute(null=True)
    etag = UnicodeAttribute(null=True)
    sequencer = UnicodeAttribute(null=True)
    version_id = UnicodeAttribute(null=True)
    size = NumberAttribute(null=True)
    sop_pk = UnicodeAttribute(null=True, attr_name="SopPK")
    # series and study aggregates
    n_instances = NumberAttribute(null=True)
    n_series = NumberAttribute(null=True)
    modality = UnicodeAttribute(null=True)
    modalities = UnicodeSetAttribute(null=True)
    sop_classes = UnicodeSetAttribute(null=True)
    # study GSI keys
    patient_pk = UnicodeAttribute(null=True, attr_name="PatientPK")
    accession_pk = UnicodeAttribute(null=True, attr_name="AccessionPK")
    name_pk = UnicodeAttribute(null=True, attr_name="NamePK")
    name_sk = UnicodeAttribute(null=True, attr_name="NameSK")
    date_pk = UnicodeAttribute(null=True, attr_name="DatePK")
    date_sk = UnicodeAttribute(null=True, attr_name="DateSK")
    # meta
    months = UnicodeSetAttribute(null=True)
    # study: normalised names indexed through alias items
    name_aliases = UnicodeSetAttribute(null=True)

    by_patient: ClassVar[_PatientIndex]
    by_accession: ClassVar[_AccessionIndex]
    by_name: ClassVar[_NameIndex]
    by_date: ClassVar[_DateIndex]
    by_sop: ClassVar[_SopIndex]


def _models(table: str, region_name: str, endpoint: str | None) -> type[_Item]:
    """A model class bound to one table: each catalog gets its own, so several can coexist."""

    class Item(_Item):
        class Meta:
            table_name = table
            region = region_name
            host = endpoint
            billing_mode = "PAY_PER_REQUEST"

        by_patient = _PatientIndex()
        by_accession = _AccessionIndex()
        by_name = _NameIndex()
        by_date = _DateIndex()
        by_sop = _SopIndex()

    return Item


# -- helpers ----------------------------------------------------------------------------------------


def _first(attrs: DicomJson, tag: str) -> str:
    """The first value of an attribute as a string ('' when absent)."""
    return first_value(attrs, tag) or ""


def _study_date(attrs: DicomJson) -> str:
    """StudyDate as YYYYMMDD when it is one (ACR-NEMA 'YYYY.MM.DD' too, as the matcher reads it)."""
    d = _first(attrs, STUDY_DATE)
    return d.replace(".", "") if len(d) == 10 and d[4] == "." else d


def _names(attrs: DicomJson) -> list[str]:
    """Every normalised form of PatientName (each group of each value), capped in length."""
    values = attrs.get(PATIENT_NAME, {}).get("Value") or []
    keys = (k[:_KEY_MAX] for v in values if v is not None for k in name_keys(v))
    return list(dict.fromkeys(keys))[: _MAX_ALIASES + 1]


def _int_or_none(attrs: DicomJson, tag: str) -> int | None:
    try:
        return int(_first(attrs, tag))
    except ValueError:
        return None


def _json(attrs: DicomJson) -> str:
    return orjson.dumps(attrs).decode()


def _study_pk(partition: str, study_uid: str) -> str:
    return f"{partition}#{study_uid}"


def _series_sk(series_uid: str) -> str:
    return f"SERIES#{series_uid}"


def _instance_sk(series_uid: str, sop_uid: str) -> str:
    return f"INSTANCE#{series_uid}#{sop_uid}"


def _month(study_date: str) -> str:
    m = study_date[:6]
    return m if len(m) == 6 and m.isdigit() else UNDATED_MONTH


def _date_sk(study_date: str, study_time: str, study_uid: str) -> str:
    return f"{study_date}#{study_time}#{study_uid}"[:_KEY_MAX]


def _study_order(row: StudyRow) -> tuple[str, str]:
    return _study_date(row.attrs), _first(row.attrs, STUDY_TIME)


def _sort_studies(rows: Iterable[StudyRow]) -> list[StudyRow]:
    """Newest first (StudyDate, StudyTime descending, undated last), ties by StudyInstanceUID."""
    out = sorted(rows, key=lambda r: r.study_uid)
    out.sort(key=_study_order, reverse=True)
    return out


def _ties_by_uid(rows: Iterator[StudyRow]) -> Iterator[StudyRow]:
    """Rows already newest first (ties by UID descending, as the index stores them): ties by UID."""
    for _, group in itertools.groupby(rows, key=_study_order):
        yield from sorted(group, key=lambda r: r.study_uid)


def _retryable(e: TransactWriteError) -> bool:
    code = e.cause_response_code
    if code in ("TransactionConflictException", "TransactionInProgressException", "ThrottlingException",
                "ProvisionedThroughputExceededException"):
        return True
    if code != "TransactionCanceledException":
        return False
    return all(r is None or r.code in _RETRYABLE for r in e.cancellation_reasons)


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))


# -- the adapter ------------------------------------------------------------------------------------


class DynamoCatalog(DynamoDerivedRecords):
    """The Catalog port on one DynamoDB table (see the module docstring for its layout)."""

    def __init__(self, table_name: str, *, region: str = "us-east-1", host: str | None = None,
                 create: bool = False) -> None:
        self.table_name = table_name
        self._m = _models(table_name, region, host)
        if create:
            self.create_table()

    def create_table(self) -> None:
        """Create the table (on-demand billing) if it does not exist, and wait until it is active."""
        try:
            self._m.create_table(wait=True)
        except TableError:
            if not self._m.exists():
                raise
            self._m.create_table(wait=True)  # created concurrently: wait for it

    def _connection(self) -> Connection:
        return self._m._get_connection().connection

    # -- reads of single items ----------------------------------------------------------------------

    def _read(self, pk: str, *sks: str) -> dict[str, _Item]:
        """Items of one PK by SK, read consistently in one BatchGetItem."""
        return {i.sk: i for i in self._m.batch_get([(pk, sk) for sk in sks], consistent_read=True)}

    def _study_row(self, partition: str, it: _Item) -> StudyRow:
        return StudyRow(
            partition=partition, study_uid=it.pk.split("#", 1)[1], attrs=orjson.loads(it.attrs or "{}"),
            n_series=int(it.n_series or 0), n_instances=int(it.n_instances or 0), size=int(it.size or 0),
            modalities=sorted(it.modalities or ()), sop_classes=sorted(it.sop_classes or ()),
        )

    def _series_row(self, partition: str, study_uid: str, it: _Item) -> SeriesRow:
        return SeriesRow(
            partition=partition, study_uid=study_uid, series_uid=it.sk.split("#", 1)[1],
            attrs=orjson.loads(it.attrs or "{}"), n_instances=int(it.n_instances or 0),
            size=int(it.size or 0), modality=it.modality or "",
        )

    def _instance_row(self, partition: str, study_uid: str, it: _Item) -> InstanceRow:
        _, series_uid, sop_uid = it.sk.split("#", 2)
        return InstanceRow(
            partition=partition, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
            sop_class_uid=it.sop_class or "", transfer_syntax_uid=it.tsuid or "", key=it.obj_key or "",
            size=int(it.size or 0), etag=it.etag or "", sequencer=it.sequencer or "",
            attrs=orjson.loads(it.attrs or "{}"), version_id=it.version_id,
        )

    def get_study(self, partition: str, study_uid: str) -> StudyRow | None:
        try:
            it = self._m.get(_study_pk(partition, study_uid), STUDY_SK, consistent_read=True)
        except self._m.DoesNotExist:
            return None
        return self._study_row(partition, it)

    def get_instance(
        self, partition: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> InstanceRow | None:
        try:
            it = self._m.get(_study_pk(partition, study_uid), _instance_sk(series_uid, sop_uid),
                             consistent_read=True)
        except self._m.DoesNotExist:
            return None
        return self._instance_row(partition, study_uid, it)

    # -- writes -------------------------------------------------------------------------------------

    def _commit(self, ops: Sequence[_Op]) -> bool:
        """Commit one transaction; False when it was cancelled for a reason worth a re-read."""
        try:
            with TransactWrite(connection=self._connection()) as tw:
                for kind, item, condition, actions in ops:
                    if kind == "save":
                        tw.save(item, condition=condition)
                    elif kind == "update":
                        tw.update(item, actions=actions, condition=condition)
                    else:
                        tw.delete(item, condition=condition)
        except TransactWriteError as e:
            if _retryable(e):
                return False
            raise
        return True

    def _study_actions(self, item: IndexedInstance, name: str) -> list[Action]:
        """SET the study attributes and its GSI keys (REMOVE the keys whose value is empty)."""
        m, a, i = self._m, item.study_attrs, item.instance
        p = i.partition
        date, stime = _study_date(a), _first(a, STUDY_TIME)
        pid, acc = _first(a, PATIENT_ID), _first(a, ACCESSION)
        actions: list[Action] = [
            m.attrs.set(_json(a)),
            m.date_pk.set(f"{p}#STUDY#{_month(date)}"),
            m.date_sk.set(_date_sk(date, stime, i.study_uid)),
            m.patient_pk.set(f"{p}#{pid}"[:_KEY_MAX]) if pid else m.patient_pk.remove(),
            m.accession_pk.set(f"{p}#{acc}"[:_KEY_MAX]) if acc else m.accession_pk.remove(),
        ]
        if name:
            actions += [m.name_pk.set(f"{p}#{name[0]}"), m.name_sk.set(name)]
        else:
            actions += [m.name_pk.remove(), m.name_sk.remove()]
        return actions

    def _alias(self, pk: str, partition: str, name: str) -> _Item:
        """An item that puts a study in the name index under one more of its names."""
        return self._m(pk, NAME_SK + name, name_pk=f"{partition}#{name[0]}", name_sk=name)

    def _add_month(self, partition: str, month: str) -> None:
        meta = self._m(f"{partition}#_meta", META_SK)
        meta.update(actions=[self._m.months.add({month})])

    def upsert_instance(self, item: IndexedInstance) -> UpsertOutcome:
        m, i = self._m, item.instance
        check_partition(i.partition)
        for uid, what in ((i.study_uid, "StudyInstanceUID"), (i.series_uid, "SeriesInstanceUID"),
                          (i.sop_uid, "SOPInstanceUID")):
            check_uid(uid, what)
        pk = _study_pk(i.partition, i.study_uid)
        se_sk, in_sk = _series_sk(i.series_uid), _instance_sk(i.series_uid, i.sop_uid)
        month = _month(_study_date(item.study_attrs))
        names = _names(item.study_attrs)
        name, aliases = (names[0], set(names[1:])) if names else ("", set())
        for attempt in range(MAX_ATTEMPTS):
            cur = self._read(pk, in_sk, se_sk, STUDY_SK)
            old, series, study = cur.get(in_sk), cur.get(se_sk), cur.get(STUDY_SK)
            if old is not None:
                if (old.etag or "") == i.etag:
                    return "unchanged"
                if sequencer_order(i.sequencer) <= sequencer_order(old.sequencer):
                    return "stale"
                if series is None or study is None:  # an inconsistent snapshot: read again
                    _backoff(attempt)
                    continue
            if study is None or study.date_pk != f"{i.partition}#STUDY#{month}":
                # Before the study can appear under a month, the month is listed (never unlisted).
                self._add_month(i.partition, month)
            added = 1 if old is None else 0
            delta = i.size if old is None else i.size - int(old.size or 0)
            new_series = series is None
            doc = m(
                pk, in_sk, attrs=_json(i.attrs), rev=(int(old.rev or 0) + 1) if old else 1,
                sop_class=i.sop_class_uid, tsuid=i.transfer_syntax_uid, obj_key=i.key, etag=i.etag,
                sequencer=i.sequencer, version_id=i.version_id, size=i.size,
                sop_pk=f"{i.partition}#{i.sop_uid}",
            )
            doc_cond = m.pk.does_not_exist() if old is None else (m.rev == old.rev)
            se_actions: list[Action] = [
                m.n_instances.add(added), m.size.add(delta), m.rev.add(1),
                m.attrs.set(_json(item.series_attrs)),
                m.modality.set(item.modality) if item.modality else m.modality.remove(),
            ]
            st_actions: list[Action] = [
                m.n_instances.add(added), m.size.add(delta), m.n_series.add(int(new_series)), m.rev.add(1),
                *self._study_actions(item, name),
            ]
            if i.sop_class_uid:
                se_actions.append(m.sop_classes.add({i.sop_class_uid}))
                st_actions.append(m.sop_classes.add({i.sop_class_uid}))
            if item.modality:
                st_actions.append(m.modalities.add({item.modality}))
            se_cond: DbCondition = m.pk.does_not_exist() if series is None else m.pk.exists()
            st_cond: DbCondition = m.pk.does_not_exist() if study is None else m.pk.exists()
            ops: list[_Op] = [("save", doc, doc_cond, []), ("update", m(pk, se_sk), se_cond, se_actions)]
            old_aliases = set(study.name_aliases or ()) if study is not None else set()
            if aliases != old_aliases:  # rare: the alias items follow, serialised on the study's rev
                if study is not None:
                    st_cond = m.rev == study.rev
                st_actions.append(m.name_aliases.set(aliases) if aliases else m.name_aliases.remove())
                ops += [("save", self._alias(pk, i.partition, k), None, []) for k in aliases - old_aliases]
                ops += [("delete", m(pk, NAME_SK + k), None, []) for k in old_aliases - aliases]
            ops.append(("update", m(pk, STUDY_SK), st_cond, st_actions))
            if not self._commit(ops):
                _backoff(attempt)
                continue
            class_gone = old is not None and old.sop_class != i.sop_class_uid
            modality_gone = series is not None and (series.modality or "") != item.modality
            if class_gone:
                self._recompute_series(pk, i.series_uid)
            if class_gone or modality_gone:
                self._recompute_study(pk)
            return "inserted" if old is None else "replaced"
        raise CatalogConflict(f"instance {i.sop_uid}: too many concurrent catalog writes, retry later")

    def remove_instance(self, partition: str, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        m = self._m
        pk = _study_pk(partition, study_uid)
        se_sk, in_sk = _series_sk(series_uid), _instance_sk(series_uid, sop_uid)
        for attempt in range(MAX_ATTEMPTS):
            cur = self._read(pk, in_sk, se_sk, STUDY_SK)
            old, series, study = cur.get(in_sk), cur.get(se_sk), cur.get(STUDY_SK)
            if old is None:
                return False
            if series is None or study is None:
                _backoff(attempt)
                continue
            size = int(old.size or 0)
            series_gone = int(series.n_instances or 0) <= 1
            study_gone = int(study.n_instances or 0) <= 1
            ops: list[_Op] = [("delete", m(pk, in_sk), m.rev == old.rev, [])]
            if series_gone:  # the last instance of the series: the series goes too
                ops.append(("delete", m(pk, se_sk), m.n_instances == 1, []))
            else:
                ops.append(("update", m(pk, se_sk), m.n_instances > 1,
                            [m.n_instances.add(-1), m.size.add(-size), m.rev.add(1)]))
            if study_gone:
                ops.append(("delete", m(pk, STUDY_SK), m.rev == study.rev, []))
                ops += [("delete", m(pk, NAME_SK + k), None, []) for k in study.name_aliases or ()]
            else:
                ops.append(("update", m(pk, STUDY_SK), m.n_instances > 1, [
                    m.n_instances.add(-1), m.size.add(-size), m.n_series.add(-int(series_gone)),
                    m.rev.add(1)]))
            if not self._commit(ops):
                _backoff(attempt)
                continue
            if not study_gone:
                if not series_gone:
                    self._recompute_series(pk, series_uid)
                self._recompute_study(pk)
            return True
        raise CatalogConflict(f"instance {sop_uid}: too many concurrent catalog writes, retry later")

    def _recompute_series(self, pk: str, series_uid: str) -> None:
        """Set a series' SOP classes from its instances (after a removal or a replacement)."""
        m = self._m
        se_sk = _series_sk(series_uid)
        for attempt in range(MAX_ATTEMPTS):
            series = self._read(pk, se_sk).get(se_sk)
            if series is None:
                return
            classes = {
                it.sop_class for it in m.query(
                    pk, m.sk.startswith(f"INSTANCE#{series_uid}#"), consistent_read=True,
                    attributes_to_get=["PK", "SK", "sop_class"],
                ) if it.sop_class
            }
            action = m.sop_classes.set(classes) if classes else m.sop_classes.remove()
            ops: list[_Op] = [
                ("update", m(pk, se_sk), m.rev == series.rev, [action]),
                # A concurrent study recomputation may have read this series: make it start again.
                ("update", m(pk, STUDY_SK), m.pk.exists(), [m.rev.add(1)]),
            ]
            if self._commit(ops):
                return
            _backoff(attempt)
        raise CatalogConflict(f"series {series_uid}: too many concurrent catalog writes, retry later")

    def _recompute_study(self, pk: str) -> None:
        """Set a study's modalities and SOP classes from its series items."""
        m = self._m
        for attempt in range(MAX_ATTEMPTS):
            study = self._read(pk, STUDY_SK).get(STUDY_SK)
            if study is None:
                return
            modalities: set[str] = set()
            classes: set[str] = set()
            for it in m.query(pk, m.sk.startswith("SERIES#"), consistent_read=True,
                              attributes_to_get=["PK", "SK", "modality", "sop_classes"]):
                if it.modality:
                    modalities.add(it.modality)
                classes |= it.sop_classes or set()
            actions: list[Action] = [
                m.modalities.set(modalities) if modalities else m.modalities.remove(),
                m.sop_classes.set(classes) if classes else m.sop_classes.remove(),
            ]
            if self._commit([("update", m(pk, STUDY_SK), m.rev == study.rev, actions)]):
                return
            _backoff(attempt)
        raise CatalogConflict(f"study {pk}: too many concurrent catalog writes, retry later")

    # -- queries ------------------------------------------------------------------------------------

    def _months(self, partition: str) -> list[str]:
        """Months that have (or had) studies, newest first; the undated month sorts last."""
        got = self._read(f"{partition}#_meta", META_SK).get(META_SK)
        return sorted(got.months or (), reverse=True) if got is not None else []

    def _study_candidates(self, partition: str, conds: Sequence[Condition],
                          fuzzy: bool) -> Iterator[StudyRow]:
        """Studies that may match, newest first, from the most selective index for `conds`."""
        m = self._m
        by_tag = {c.tag: c for c in conds}
        rows: Iterable[_Item] | None = None
        c = by_tag.get(STUDY_UID)
        if c is not None and c.kind in ("single", "list"):
            uids = list(dict.fromkeys(c.uids))
            rows = m.batch_get([(_study_pk(partition, u), STUDY_SK) for u in uids], consistent_read=True)
        if rows is None:
            for tag, index in ((ACCESSION, m.by_accession), (PATIENT_ID, m.by_patient)):
                c = by_tag.get(tag)
                if c is not None and c.kind == "single" and c.uids:
                    rows = index.query(f"{partition}#{c.uids[0]}"[:_KEY_MAX])
                    break
        if rows is None and not fuzzy:  # fuzzy PN matching is not a prefix match
            c = by_tag.get(PATIENT_NAME)
            prefix = normalize_name(c.literal_prefix)[:_KEY_MAX] if c is not None and c.kind in (
                "single", "wildcard") else ""
            if prefix:
                rows = self._by_name(partition, prefix)
        if rows is not None:
            yield from _sort_studies(self._study_row(partition, it) for it in rows)
            return
        yield from _ties_by_uid(self._date_walk(partition, by_tag.get(STUDY_DATE)))

    def _by_name(self, partition: str, prefix: str) -> list[_Item]:
        """Study items with a normalised name that begins with `prefix` (through alias items too)."""
        m = self._m
        studies: dict[str, _Item] = {}
        via_alias: set[str] = set()
        for it in m.by_name.query(f"{partition}#{prefix[0]}", m.name_sk.startswith(prefix)):
            if it.sk == STUDY_SK:
                studies[it.pk] = it
            else:
                via_alias.add(it.pk)
        if via_alias - studies.keys():
            keys = [(pk, STUDY_SK) for pk in via_alias - studies.keys()]
            studies.update((it.pk, it) for it in m.batch_get(keys, consistent_read=True))
        return list(studies.values())

    def _date_walk(self, partition: str, date: Condition | None) -> Iterator[StudyRow]:
        """The date index, month by month from the newest, each month newest first, lazily paged."""
        m = self._m
        lo, hi = date.range_bounds if date is not None else (None, None)  # a superset for lists
        lo_month = lo[:6].ljust(6, "0") if lo else ""
        hi_month = hi[:6].ljust(6, "9") if hi else "999999"
        lo8 = lo if lo and lo.isdigit() and len(lo) == 8 else ""
        hi8 = f"{hi}~" if hi and hi.isdigit() and len(hi) == 8 else ""  # '~' sorts after '#...'
        for month in self._months(partition):
            if (lo or hi) and month == UNDATED_MONTH:
                continue  # a date range never matches an undated study (as in the SQLite adapter)
            if not lo_month <= month <= hi_month:
                continue
            use_lo, use_hi = lo8 and month == lo8[:6], hi8 and month == hi8[:6]
            key_cond: DbCondition | None = None
            if use_lo and use_hi:
                key_cond = m.date_sk.between(lo8, hi8)
            elif use_lo:
                key_cond = m.date_sk >= lo8
            elif use_hi:
                key_cond = m.date_sk <= hi8
            for it in m.by_date.query(f"{partition}#STUDY#{month}", key_cond, scan_index_forward=False,
                                      page_size=100):
                yield self._study_row(partition, it)

    def query_studies(
        self,
        partition: str,
        conditions: Sequence[Condition],
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> QueryPage[StudyRow]:
        rows = self._study_candidates(partition, conditions, fuzzy)
        return filter_page(
            rows, StudyRow.to_dicom_json, conditions, fuzzy=fuzzy, limit=limit, offset=offset
        )

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
        m = self._m
        items = m.query(_study_pk(partition, study_uid), m.sk.startswith("SERIES#"), consistent_read=True)
        rows = [self._series_row(partition, study_uid, it) for it in items]

        def order(r: SeriesRow) -> tuple[bool, int, str]:
            n = _int_or_none(r.attrs, SERIES_NUMBER)
            return n is None, n or 0, r.series_uid

        rows.sort(key=order)
        return filter_page(
            rows, SeriesRow.to_dicom_json, conditions, fuzzy=fuzzy, limit=limit, offset=offset
        )

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
        m = self._m
        prefix = "INSTANCE#" if series_uid is None else f"INSTANCE#{series_uid}#"
        items = m.query(_study_pk(partition, study_uid), m.sk.startswith(prefix), consistent_read=True)
        rows = [self._instance_row(partition, study_uid, it) for it in items]

        def order(r: InstanceRow) -> tuple[str, bool, int, str]:
            n = _int_or_none(r.attrs, INSTANCE_NUMBER)
            return r.series_uid, n is None, n or 0, r.sop_uid

        rows.sort(key=order)
        return filter_page(
            rows, InstanceRow.to_dicom_json, conditions, fuzzy=fuzzy, limit=limit, offset=offset
        )

    def missing_keys(self, partition: str, keys: Iterable[str]) -> set[str]:
        wanted: dict[tuple[str, str], str] = {}
        missing: set[str] = set()
        for k in keys:
            ik = parse_instance_key(k)
            if ik is None:
                missing.add(k)  # not an original instance's key: it cannot be catalogued
            else:  # keys are global (they name their partition), as in the SQLite adapter
                wanted[(_study_pk(ik.partition, ik.study_uid), _instance_sk(ik.series_uid, ik.sop_uid))] = k
        found = {
            (it.pk, it.sk)
            for it in self._m.batch_get(list(wanted), consistent_read=True, attributes_to_get=["PK", "SK"])
        }
        return missing | {k for key, k in wanted.items() if key not in found}

    def locate_instances(self, partition: str, sop_uids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        check_partition(partition)
        prefix = f"{partition}#"
        out: dict[str, list[tuple[str, str]]] = {}
        for sop_uid in set(sop_uids):
            for item in self._m.by_sop.query(f"{prefix}{sop_uid}"):
                _, series_uid, _ = item.sk.split("#", 2)
                out.setdefault(sop_uid, []).append((item.pk[len(prefix):], series_uid))
        return out

    def check(self) -> None:
        """Raise unless the table answers (a GetItem of a key that is never written)."""
        self.get_study("-", "health-check")

    def totals(self, partition: str) -> None:
        """None: totals would take a table scan, or a counter item every ingest contends on. CloudWatch sums
        the indexer's InstancesIndexed and IndexedBytes instead."""
        return None

    def close(self) -> None:
        """Nothing to release: botocore clients are pooled by pynamodb."""
