"""DynamoDB records of derived copies (AWS), in the catalog's table, mixed into DynamoCatalog
(`DerivedCatalog` port). Keys cannot collide with the catalog's (`{partition}#{StudyUID}`: a UID has
no '#'):

    PK = {partition}#DERIVED#{StudyUID}   SK = {SeriesUID}#{SOPUID}#{syntax}#{variant}

A study's copies (a series', an instance's) are one Query (`begins_with`); a put is conditional on the
source ETag, so the same event twice writes one record.
"""

from __future__ import annotations

from typing import Any

import orjson
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, PutError
from pynamodb.models import Model

from pacs.catalog.records import DerivedCopyRow, DerivedOutcome

DERIVED_PK = "DERIVED"
_CONDITION_FAILED = "ConditionalCheckFailedException"


class _Copy(Model):
    pk = UnicodeAttribute(hash_key=True, attr_name="PK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")
    obj_key = UnicodeAttribute(null=True)
    size = NumberAttribute(null=True)
    source_etag = UnicodeAttribute(null=True)
    source_version = UnicodeAttribute(null=True)
    created = UnicodeAttribute(null=True)
    options = UnicodeAttribute(null=True)


def _model(table: str, region_name: str, endpoint: str | None) -> type[_Copy]:
    class Copy(_Copy):
        class Meta:
            table_name = table
            region = region_name
            host = endpoint

    return Copy


def _pk(partition: str, study_uid: str) -> str:
    return f"{partition}#{DERIVED_PK}#{study_uid}"


def _sk(series_uid: str, sop_uid: str, syntax: str, variant: str) -> str:
    return f"{series_uid}#{sop_uid}#{syntax}#{variant}"


def _conflict(e: Exception) -> bool:
    return getattr(e, "cause_response_code", None) == _CONDITION_FAILED


class DynamoDerivedRecords:
    """The `DerivedCatalog` methods; the class it is mixed into gives `table_name`, `_region`, `_host`."""

    table_name: str
    _derived_model: type[_Copy] | None = None

    def _copies(self) -> type[_Copy]:
        if self._derived_model is None:
            model: Any = self.__dict__["_m"]  # the catalog's model: same table, region, endpoint
            meta = model.Meta
            self._derived_model = _model(self.table_name, meta.region, getattr(meta, "host", None))
        return self._derived_model

    def put_derived(self, row: DerivedCopyRow) -> DerivedOutcome:
        m = self._copies()
        before = self.get_derived(row.partition, row.study_uid, row.series_uid, row.sop_uid, row.syntax,
                                  row.variant)
        item = m(_pk(row.partition, row.study_uid), _sk(row.series_uid, row.sop_uid, row.syntax, row.variant),
                 obj_key=row.key, size=row.size, source_etag=row.source_etag,
                 source_version=row.source_version, created=row.created,
                 options=orjson.dumps(row.options).decode())
        try:  # absent, or made from another version of the original (a concurrent twin finds it there)
            item.save(condition=m.pk.does_not_exist() | (m.source_etag != row.source_etag)
                      | (m.obj_key != row.key))
        except PutError as e:
            if _conflict(e):
                return "unchanged"
            raise
        return "inserted" if before is None else "replaced"

    def get_derived(self, partition: str, study_uid: str, series_uid: str, sop_uid: str, syntax: str,
                    variant: str = "") -> DerivedCopyRow | None:
        m = self._copies()
        try:
            item = m.get(_pk(partition, study_uid), _sk(series_uid, sop_uid, syntax, variant),
                         consistent_read=True)
        except m.DoesNotExist:
            return None
        return _row(partition, study_uid, item)

    def list_derived(self, partition: str, study_uid: str, series_uid: str | None = None,
                     sop_uid: str | None = None) -> list[DerivedCopyRow]:
        m = self._copies()
        prefix = "" if series_uid is None else f"{series_uid}#" + ("" if sop_uid is None else f"{sop_uid}#")
        cond = m.sk.startswith(prefix) if prefix else None
        items = m.query(_pk(partition, study_uid), range_key_condition=cond, consistent_read=True)
        return [_row(partition, study_uid, i) for i in items]

    def remove_derived(self, partition: str, study_uid: str, series_uid: str, sop_uid: str, syntax: str,
                       variant: str = "") -> bool:
        m = self._copies()
        item = m(_pk(partition, study_uid), _sk(series_uid, sop_uid, syntax, variant))
        try:
            item.delete(condition=m.pk.exists())
        except DeleteError as e:
            if _conflict(e):
                return False
            raise
        return True


def _row(partition: str, study_uid: str, item: _Copy) -> DerivedCopyRow:
    series_uid, sop_uid, syntax, variant = item.sk.split("#", 3)
    return DerivedCopyRow(
        partition, study_uid, series_uid, sop_uid, syntax, variant, item.obj_key or "", int(item.size or 0),
        item.source_etag or "", item.source_version, item.created or "", orjson.loads(item.options or "{}"))
