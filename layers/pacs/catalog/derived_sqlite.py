"""SQLite records of derived copies (embedded mode): a `derived` table in the catalog's database, mixed
into SqliteCatalog (`DerivedCatalog` port)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from pacs.catalog.records import DerivedCopyRow, DerivedOutcome

T = TypeVar("T")

DERIVED_SCHEMA = """
CREATE TABLE IF NOT EXISTS derived (
    partition TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL,
    syntax TEXT NOT NULL, variant TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL,
    source_etag TEXT NOT NULL, source_version TEXT, created TEXT NOT NULL, options BLOB NOT NULL,
    PRIMARY KEY (partition, study_uid, series_uid, sop_uid, syntax, variant)
) WITHOUT ROWID;
"""

_COLS = ("partition, study_uid, series_uid, sop_uid, syntax, variant, key, size, source_etag,"
         " source_version, created, options")


def _row(r: tuple[Any, ...]) -> DerivedCopyRow:
    return DerivedCopyRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                          orjson.loads(r[11]))


class SqliteDerivedRecords:
    """The `DerivedCatalog` methods; the class it is mixed into gives `_db` and `_write`."""

    _db: Callable[[], sqlite3.Connection]
    _write: Callable[[Callable[[sqlite3.Connection], Any]], Any]

    def put_derived(self, row: DerivedCopyRow) -> DerivedOutcome:
        def put(db: sqlite3.Connection) -> DerivedOutcome:
            old = db.execute(
                "SELECT source_etag, key FROM derived WHERE partition=? AND study_uid=? AND series_uid=?"
                " AND sop_uid=? AND syntax=? AND variant=?",
                (row.partition, row.study_uid, row.series_uid, row.sop_uid, row.syntax, row.variant),
            ).fetchone()
            if old is not None and tuple(old) == (row.source_etag, row.key):
                return "unchanged"
            db.execute(
                f"INSERT OR REPLACE INTO derived ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.partition, row.study_uid, row.series_uid, row.sop_uid, row.syntax, row.variant, row.key,
                 row.size, row.source_etag, row.source_version, row.created, orjson.dumps(row.options)),
            )
            return "inserted" if old is None else "replaced"

        outcome: DerivedOutcome = self._write(put)
        return outcome

    def get_derived(self, partition: str, study_uid: str, series_uid: str, sop_uid: str, syntax: str,
                    variant: str = "") -> DerivedCopyRow | None:
        r = self._db().execute(
            f"SELECT {_COLS} FROM derived WHERE partition=? AND study_uid=? AND series_uid=? AND sop_uid=?"
            " AND syntax=? AND variant=?", (partition, study_uid, series_uid, sop_uid, syntax, variant),
        ).fetchone()
        return None if r is None else _row(r)

    def list_derived(self, partition: str, study_uid: str, series_uid: str | None = None,
                     sop_uid: str | None = None) -> list[DerivedCopyRow]:
        sql, args = f"SELECT {_COLS} FROM derived WHERE partition=? AND study_uid=?", [partition, study_uid]
        if series_uid is not None:
            sql, args = sql + " AND series_uid=?", [*args, series_uid]
            if sop_uid is not None:
                sql, args = sql + " AND sop_uid=?", [*args, sop_uid]
        rows = self._db().execute(sql + " ORDER BY series_uid, sop_uid, syntax, variant", args).fetchall()
        return [_row(r) for r in rows]

    def remove_derived(self, partition: str, study_uid: str, series_uid: str, sop_uid: str, syntax: str,
                       variant: str = "") -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            return db.execute(
                "DELETE FROM derived WHERE partition=? AND study_uid=? AND series_uid=? AND sop_uid=?"
                " AND syntax=? AND variant=?", (partition, study_uid, series_uid, sop_uid, syntax, variant),
            ).rowcount == 1

        removed: bool = self._write(remove)
        return removed
