"""DynamoDB records of MPPS steps and storage commitment requests (AWS), in the catalog's table with
keys that cannot collide with its items (catalog PKs are `{partition}#{StudyUID}` or
`{partition}#_meta`; a UID is digits and dots):

    PK = {partition}#MPPS     SK = {MPPS SOP Instance UID}   status, attrs (DICOM JSON), times, rev
    PK = {partition}#STGCMT   SK = {Transaction UID}         requester, delivery, body (lists), times

A partition's steps (or commitments) are one Query; writes are conditional (insert if absent,
replace if `rev` is unchanged).

Instances named by a commitment request are located by the catalog itself (its `sop` index).
"""

from __future__ import annotations

import orjson
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import PutError
from pynamodb.models import Model

from pacs.catalog.mpps_sqlite import commitment_body, commitment_from
from pacs.services.commitment import CommitmentRecord
from pacs.services.mpps import MppsRecord

MPPS_PK, COMMITMENT_PK = "MPPS", "STGCMT"
_CONDITION_FAILED = "ConditionalCheckFailedException"


class _Record(Model):
    pk = UnicodeAttribute(hash_key=True, attr_name="PK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")
    attrs = UnicodeAttribute(null=True)
    rev = NumberAttribute(null=True)
    status = UnicodeAttribute(null=True, attr_name="mpps_status")
    study_uids = UnicodeAttribute(null=True)
    created = UnicodeAttribute(null=True)
    updated = UnicodeAttribute(null=True)
    requester = UnicodeAttribute(null=True)
    delivery = UnicodeAttribute(null=True)
    body = UnicodeAttribute(null=True)


def _model(table: str, region_name: str, endpoint: str | None) -> type[_Record]:
    class Record(_Record):
        class Meta:
            table_name = table
            region = region_name
            host = endpoint

    return Record


def _mpps(item: _Record, partition: str) -> MppsRecord:
    return MppsRecord(partition, item.sk, item.status or "", orjson.loads(item.attrs or "{}"),
                      tuple(orjson.loads(item.study_uids or "[]")), item.created or "", item.updated or "",
                      int(item.rev or 1))


def _conflict(e: Exception) -> bool:
    return getattr(e, "cause_response_code", None) == _CONDITION_FAILED


class DynamoMppsStore:
    def __init__(self, table_name: str, *, region: str = "us-east-1", host: str | None = None) -> None:
        self.table_name = table_name
        self._m = _model(table_name, region, host)

    # -- MPPS ---------------------------------------------------------------------------------------

    def _mpps_item(self, record: MppsRecord) -> _Record:
        return self._m(
            f"{record.partition}#{MPPS_PK}", record.sop_uid, attrs=orjson.dumps(record.attrs).decode(),
            rev=record.version, status=record.status, created=record.created, updated=record.updated,
            study_uids=orjson.dumps(list(record.study_uids)).decode(),
        )

    def create_mpps(self, record: MppsRecord) -> bool:
        try:
            self._mpps_item(record).save(condition=self._m.pk.does_not_exist())
        except PutError as e:
            if _conflict(e):
                return False
            raise
        return True

    def get_mpps(self, partition: str, sop_uid: str) -> MppsRecord | None:
        try:
            item = self._m.get(f"{partition}#{MPPS_PK}", sop_uid, consistent_read=True)
        except self._m.DoesNotExist:
            return None
        return _mpps(item, partition)

    def replace_mpps(self, record: MppsRecord, expected_version: int) -> bool:
        try:
            self._mpps_item(record).save(condition=self._m.rev == expected_version)
        except PutError as e:
            if _conflict(e):
                return False
            raise
        return True

    def list_mpps(self, partition: str, status: str | None = None) -> list[MppsRecord]:
        cond = None if status is None else self._m.status == status
        items = self._m.query(f"{partition}#{MPPS_PK}", filter_condition=cond, consistent_read=True)
        records = [_mpps(i, partition) for i in items]
        return sorted(records, key=lambda r: (r.created, r.sop_uid))

    # -- storage commitment -------------------------------------------------------------------------

    def _commitment_item(self, record: CommitmentRecord) -> _Record:
        return self._m(
            f"{record.partition}#{COMMITMENT_PK}", record.transaction_uid, requester=record.requester,
            created=record.created, updated=record.updated or record.created, delivery=record.delivery,
            body=commitment_body(record).decode(),
        )

    def create_commitment(self, record: CommitmentRecord) -> bool:
        try:
            self._commitment_item(record).save(condition=self._m.pk.does_not_exist())
        except PutError as e:
            if _conflict(e):
                return False
            raise
        return True

    def put_commitment(self, record: CommitmentRecord) -> None:
        self._commitment_item(record).save()

    def _commitment(self, item: _Record, partition: str) -> CommitmentRecord:
        return commitment_from(partition, item.sk, item.requester or "", item.created or "",
                               item.updated or "", item.delivery or "", item.body or "{}")

    def get_commitment(self, partition: str, transaction_uid: str) -> CommitmentRecord | None:
        try:
            item = self._m.get(f"{partition}#{COMMITMENT_PK}", transaction_uid, consistent_read=True)
        except self._m.DoesNotExist:
            return None
        return self._commitment(item, partition)

    def list_commitments(self, partition: str, delivery: str | None = None) -> list[CommitmentRecord]:
        cond = None if delivery is None else self._m.delivery == delivery
        items = self._m.query(f"{partition}#{COMMITMENT_PK}", filter_condition=cond, consistent_read=True)
        records = [self._commitment(i, partition) for i in items]
        return sorted(records, key=lambda r: (r.created, r.transaction_uid))

    def close(self) -> None:
        """Nothing to release: botocore clients are pooled by pynamodb."""
