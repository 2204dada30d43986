"""SQLite Catalog (embedded mode): the access patterns of DESIGN.md with indexes, WAL mode.

Each upsert or removal is one `BEGIN IMMEDIATE` transaction that writes the instance row and the
series and study aggregates together, so counts stay exact under duplicate, concurrent and
out-of-order calls (from several threads or processes). Queries use the most selective index the
conditions allow, then filter in Python with the shared matcher.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pacs.catalog.derived_sqlite import DERIVED_SCHEMA, SqliteDerivedRecords
from pacs.catalog.matching import Condition, filter_page, name_keys, normalize_name
from pacs.catalog.records import (
    CatalogTotals,
    IndexedInstance,
    InstanceRow,
    QueryPage,
    SeriesRow,
    StudyRow,
    UpsertOutcome,
    first_value,
)
from pacs.catalog.sqlite_connections import SqliteStore
from pacs.events.model import sequencer_order

PATIENT_NAME, PATIENT_ID, ISSUER = "00100010", "00100020", "00100021"
ACCESSION, STUDY_DATE, STUDY_TIME, STUDY_UID = "00080050", "00080020", "00080030", "0020000D"
SERIES_NUMBER, INSTANCE_NUMBER = "00200011", "00200013"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    partition TEXT NOT NULL, study_uid TEXT NOT NULL, attrs BLOB NOT NULL,
    n_series INTEGER NOT NULL, n_instances INTEGER NOT NULL, size INTEGER NOT NULL,
    modalities TEXT NOT NULL, sop_classes TEXT NOT NULL,
    patient_id TEXT, issuer TEXT, accession TEXT, study_date TEXT, study_time TEXT,
    PRIMARY KEY (partition, study_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS studies_patient ON studies (partition, patient_id);
CREATE INDEX IF NOT EXISTS studies_accession ON studies (partition, accession);
CREATE TABLE IF NOT EXISTS study_names (
    partition TEXT NOT NULL, name_norm TEXT NOT NULL, study_uid TEXT NOT NULL,
    PRIMARY KEY (partition, name_norm, study_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS studies_date ON studies (partition, study_date DESC, study_time DESC);
CREATE TABLE IF NOT EXISTS series (
    partition TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, attrs BLOB NOT NULL,
    n_instances INTEGER NOT NULL, size INTEGER NOT NULL, modality TEXT NOT NULL,
    series_number INTEGER,
    PRIMARY KEY (partition, study_uid, series_uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instances (
    partition TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, transfer_syntax_uid TEXT NOT NULL, key TEXT NOT NULL,
    size INTEGER NOT NULL, etag TEXT NOT NULL, sequencer TEXT NOT NULL, version_id TEXT,
    instance_number INTEGER, attrs BLOB NOT NULL,
    PRIMARY KEY (partition, study_uid, series_uid, sop_uid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS instances_key ON instances (key);
CREATE INDEX IF NOT EXISTS instances_sop ON instances (partition, sop_uid);
"""

_STUDY_COLS = "partition, study_uid, attrs, n_series, n_instances, size, modalities, sop_classes"
_SERIES_COLS = "partition, study_uid, series_uid, attrs, n_instances, size, modality"
_INSTANCE_COLS = (
    "partition, study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax_uid, key, size, etag,"
    " sequencer, attrs, version_id"
)


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _study(r: tuple[Any, ...]) -> StudyRow:
    return StudyRow(r[0], r[1], orjson.loads(r[2]), r[3], r[4], r[5], orjson.loads(r[6]), orjson.loads(r[7]))


def _series(r: tuple[Any, ...]) -> SeriesRow:
    return SeriesRow(r[0], r[1], r[2], orjson.loads(r[3]), r[4], r[5], r[6])


def _instance(r: tuple[Any, ...]) -> InstanceRow:
    return InstanceRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], orjson.loads(r[10]), r[11]
    )


class SqliteCatalog(SqliteDerivedRecords, SqliteStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA + DERIVED_SCHEMA)

    # -- writes ---------------------------------------------------------------------------------

    def upsert_instance(self, item: IndexedInstance) -> UpsertOutcome:
        return self._write(lambda db: self._upsert(db, item))

    def _upsert(self, db: sqlite3.Connection, item: IndexedInstance) -> UpsertOutcome:
        i = item.instance
        ids = (i.partition, i.study_uid, i.series_uid)
        old = db.execute(
            "SELECT etag, sequencer, size FROM instances WHERE partition=? AND study_uid=? AND series_uid=?"
            " AND sop_uid=?",
            (*ids, i.sop_uid),
        ).fetchone()
        if old is not None:
            if old[0] == i.etag:
                return "unchanged"
            if sequencer_order(i.sequencer) <= sequencer_order(old[1]):
                return "stale"
        added, delta = (1, i.size) if old is None else (0, i.size - old[2])
        db.execute(
            f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLS}, instance_number)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *ids, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.key, i.size, i.etag,
                i.sequencer, orjson.dumps(i.attrs), i.version_id,
                _int_or_none(first_value(i.attrs, INSTANCE_NUMBER)),
            ),
        )
        series = db.execute(
            "SELECT n_instances FROM series WHERE partition=? AND study_uid=? AND series_uid=?", ids
        ).fetchone()
        new_series = series is None
        db.execute(
            "INSERT INTO series (partition, study_uid, series_uid, attrs, n_instances, size, modality,"
            " series_number) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET attrs=excluded.attrs,"
            " n_instances=n_instances+?, size=size+?, modality=excluded.modality,"
            " series_number=excluded.series_number",
            (
                *ids, orjson.dumps(item.series_attrs), added, i.size, item.modality,
                _int_or_none(first_value(item.series_attrs, SERIES_NUMBER)), added, delta,
            ),
        )
        study = db.execute(
            "SELECT modalities, sop_classes, attrs FROM studies WHERE partition=? AND study_uid=?", ids[:2]
        ).fetchone()
        modalities: set[str] = set(orjson.loads(study[0])) if study else set()
        sop_classes: set[str] = set(orjson.loads(study[1])) if study else set()
        if item.modality:
            modalities.add(item.modality)
        sop_classes.add(i.sop_class_uid)
        a = item.study_attrs
        study_json = orjson.dumps(a)
        db.execute(
            "INSERT INTO studies (partition, study_uid, attrs, n_series, n_instances, size, modalities,"
            " sop_classes, patient_id, issuer, accession, study_date, study_time)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET attrs=excluded.attrs,"
            " n_series=n_series+?, n_instances=n_instances+?, size=size+?, modalities=excluded.modalities,"
            " sop_classes=excluded.sop_classes, patient_id=excluded.patient_id, issuer=excluded.issuer,"
            " accession=excluded.accession,"
            " study_date=excluded.study_date, study_time=excluded.study_time",
            (
                *ids[:2], study_json, int(new_series), added, i.size,
                orjson.dumps(sorted(modalities)), orjson.dumps(sorted(sop_classes)),
                first_value(a, PATIENT_ID), first_value(a, ISSUER), first_value(a, ACCESSION),
                first_value(a, STUDY_DATE),
                first_value(a, STUDY_TIME), int(new_series), added, delta,
            ),
        )
        if study is None or study[2] != study_json:  # the names come from the study's attributes
            self._set_names(db, i.partition, i.study_uid, a.get(PATIENT_NAME, {}).get("Value", [None])[0])
        return "inserted" if old is None else "replaced"

    @staticmethod
    def _set_names(db: sqlite3.Connection, partition: str, study_uid: str, name: Any) -> None:
        """Index every group (alphabetic, ideographic, phonetic) of the patient's name."""
        db.execute("DELETE FROM study_names WHERE partition=? AND study_uid=?", (partition, study_uid))
        db.executemany(
            "INSERT OR IGNORE INTO study_names (partition, name_norm, study_uid) VALUES (?,?,?)",
            [(partition, k, study_uid) for k in (name_keys(name) if name else ())],
        )

    def remove_instance(self, partition: str, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        return self._write(lambda db: self._remove(db, partition, study_uid, series_uid, sop_uid))

    def _remove(self, db: sqlite3.Connection, partition: str, study_uid: str, series_uid: str,
                sop_uid: str) -> bool:
        ids = (partition, study_uid, series_uid)
        row = db.execute(
            "DELETE FROM instances WHERE partition=? AND study_uid=? AND series_uid=? AND sop_uid=?"
            " RETURNING size",
            (*ids, sop_uid),
        ).fetchone()
        if row is None:
            return False
        size = row[0]
        left = db.execute(
            "UPDATE series SET n_instances=n_instances-1, size=size-? WHERE partition=? AND study_uid=?"
            " AND series_uid=? RETURNING n_instances",
            (size, *ids),
        ).fetchone()
        series_gone = left is not None and left[0] <= 0
        if series_gone:
            db.execute("DELETE FROM series WHERE partition=? AND study_uid=? AND series_uid=?", ids)
        remaining = db.execute(
            "UPDATE studies SET n_series=n_series-?, n_instances=n_instances-1, size=size-?"
            " WHERE partition=? AND study_uid=? RETURNING n_instances",
            (int(series_gone), size, partition, study_uid),
        ).fetchone()
        if remaining is not None and remaining[0] <= 0:
            db.execute("DELETE FROM studies WHERE partition=? AND study_uid=?", (partition, study_uid))
            db.execute("DELETE FROM study_names WHERE partition=? AND study_uid=?", (partition, study_uid))
            return True
        modalities = sorted(
            {m for (m,) in db.execute(
                "SELECT DISTINCT modality FROM series WHERE partition=? AND study_uid=?",
                (partition, study_uid),
            ) if m}
        )
        sop_classes = sorted(
            c for (c,) in db.execute(
                "SELECT DISTINCT sop_class_uid FROM instances WHERE partition=? AND study_uid=?",
                (partition, study_uid),
            )
        )
        db.execute(
            "UPDATE studies SET modalities=?, sop_classes=? WHERE partition=? AND study_uid=?",
            (orjson.dumps(modalities), orjson.dumps(sop_classes), partition, study_uid),
        )
        return True

    # -- reads ----------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise unless the database file can be opened and read now: a new read-only connection, not
        this process's open ones, which keep working on cached pages of a file destroyed under them."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            db.execute("SELECT 1 FROM studies LIMIT 1").fetchall()
        finally:
            db.close()

    def totals(self, partition: str) -> CatalogTotals:
        """One pass over the partition's study rows (their aggregates), none over series or instances."""
        n, series, instances, size = self._db().execute(
            "SELECT count(*), total(n_series), total(n_instances), total(size) FROM studies"
            " WHERE partition=?", (partition,)).fetchone()
        return CatalogTotals(int(n), int(series), int(instances), int(size))

    def get_study(self, partition: str, study_uid: str) -> StudyRow | None:
        r = self._db().execute(
            f"SELECT {_STUDY_COLS} FROM studies WHERE partition=? AND study_uid=?", (partition, study_uid)
        ).fetchone()
        return _study(r) if r else None

    def get_instance(
        self, partition: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> InstanceRow | None:
        r = self._db().execute(
            f"SELECT {_INSTANCE_COLS} FROM instances WHERE partition=? AND study_uid=? AND series_uid=?"
            " AND sop_uid=?",
            (partition, study_uid, series_uid, sop_uid),
        ).fetchone()
        return _instance(r) if r else None

    def _study_plan(
        self, partition: str, conds: Sequence[Condition], fuzzy: bool
    ) -> tuple[str, str, list[Any]]:
        """The most selective index for the conditions: its name (for INDEXED BY; "" to leave the
        choice to the planner), a WHERE clause and its parameters. Without statistics the planner
        prefers the primary key's `partition=?` (a scan) to the patient and accession indexes, and the
        date index (in answer order) to any other: hence the names.

        The name index holds the Alphabetic group: fuzzy matching (words in any order) cannot use it.
        """
        by_tag = {c.tag: c for c in conds}
        c = by_tag.get(STUDY_UID)
        if c is not None and c.kind in ("single", "list"):
            uids = list(c.uids) if c.kind == "list" else [c.value]
            return "", f"study_uid IN ({','.join('?' * len(uids))})", uids
        for tag, col, index in ((PATIENT_ID, "patient_id", "studies_patient"),
                                (ACCESSION, "accession", "studies_accession")):
            c = by_tag.get(tag)
            if c is not None and c.kind == "single":
                return index, f"{col} = ?", [c.uids[0]]  # the value without DICOM padding
        c = by_tag.get(PATIENT_NAME)
        if c is not None and c.kind in ("single", "wildcard") and not fuzzy:
            prefix = normalize_name(c.literal_prefix)
            if prefix:
                return (
                    "",
                    "study_uid IN (SELECT study_uid FROM study_names WHERE partition=?"
                    " AND name_norm >= ? AND name_norm < ?)",
                    [partition, prefix, prefix + "\U0010ffff"],
                )
        c = by_tag.get(STUDY_DATE)
        if c is not None and c.kind in ("single", "range"):
            lo, hi = c.range_bounds if c.kind == "range" else (c.value, c.value)
            clauses, params = [], []
            if lo:
                clauses.append("study_date >= ?")
                params.append(lo)
            if hi:
                clauses.append("study_date <= ?")
                params.append(hi)
            if clauses:
                return "studies_date", " AND ".join(clauses), params
        return "studies_date", "1", []

    def query_studies(
        self, partition: str, conditions: Sequence[Condition], *, fuzzy: bool = False,
        limit: int | None = None, offset: int = 0,
    ) -> QueryPage[StudyRow]:
        index, where, params = self._study_plan(partition, conditions, fuzzy)
        # Newest first, undated last (NULL sorts last in DESC). A list or a date range reads the date
        # index in this order (its rows end with the primary key): a page without sorting the catalog.
        # Without a named index (UIDs, names) the order is written so that the date index cannot
        # serve it, else the planner walks that index and probes the UIDs row by row.
        hint = f" INDEXED BY {index}" if index else ""
        order = "study_date DESC" if index else "study_date IS NULL, study_date DESC"
        cur = self._db().execute(
            f"SELECT {_STUDY_COLS} FROM studies{hint} WHERE partition=? AND {where}"
            f" ORDER BY {order}, study_time DESC, study_uid",
            (partition, *params),
        )
        return filter_page(
            map(_study, cur), StudyRow.to_dicom_json, conditions, fuzzy=fuzzy, limit=limit, offset=offset
        )

    def query_series(
        self, partition: str, study_uid: str, conditions: Sequence[Condition], *, fuzzy: bool = False,
        limit: int | None = None, offset: int = 0,
    ) -> QueryPage[SeriesRow]:
        cur = self._db().execute(
            f"SELECT {_SERIES_COLS} FROM series WHERE partition=? AND study_uid=?"
            " ORDER BY series_number IS NULL, series_number, series_uid",
            (partition, study_uid),
        )
        return filter_page(
            map(_series, cur), SeriesRow.to_dicom_json, conditions, fuzzy=fuzzy, limit=limit, offset=offset
        )

    def query_instances(
        self, partition: str, study_uid: str, series_uid: str | None, conditions: Sequence[Condition],
        *, fuzzy: bool = False, limit: int | None = None, offset: int = 0,
    ) -> QueryPage[InstanceRow]:
        sql = f"SELECT {_INSTANCE_COLS} FROM instances WHERE partition=? AND study_uid=?"
        params: list[Any] = [partition, study_uid]
        if series_uid is not None:
            sql += " AND series_uid=?"
            params.append(series_uid)
        sql += " ORDER BY series_uid, instance_number IS NULL, instance_number, sop_uid"
        cur = self._db().execute(sql, params)
        return filter_page(
            map(_instance, cur), InstanceRow.to_dicom_json, conditions,
            fuzzy=fuzzy, limit=limit, offset=offset,
        )

    def locate_instances(self, partition: str, sop_uids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        wanted = list(set(sop_uids))
        out: dict[str, list[tuple[str, str]]] = {}
        db = self._db()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for study, series, sop in db.execute(
                f"SELECT study_uid, series_uid, sop_uid FROM instances INDEXED BY instances_sop"
                f" WHERE partition=? AND sop_uid IN ({','.join('?' * len(chunk))})", (partition, *chunk)
            ):
                out.setdefault(sop, []).append((study, series))
        return out

    def missing_keys(self, partition: str, keys: Iterable[str]) -> set[str]:
        db = self._db()
        return {
            k for k in keys
            if db.execute("SELECT 1 FROM instances WHERE key=?", (k,)).fetchone() is None
        }

