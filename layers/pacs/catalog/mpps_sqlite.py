"""SQLite records of MPPS steps and storage commitment requests (embedded mode), in the catalog's
database file through a connection of their own (WAL mode, as the catalog).

It also locates catalogued instances by SOP Instance UID for storage commitment (a request names
only SOP Instance UIDs, the catalog is keyed by study and series): a read of the catalog's
`instances` table through an index on (partition, sop_uid) created here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from pacs.catalog.sqlite_connections import SqliteStore
from pacs.services.commitment import CommitmentRecord, FailedRef, SopRef
from pacs.services.mpps import MppsRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mpps (
    partition TEXT NOT NULL, sop_uid TEXT NOT NULL, status TEXT NOT NULL, attrs BLOB NOT NULL,
    study_uids TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (partition, sop_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mpps_status ON mpps (partition, status, created);
CREATE TABLE IF NOT EXISTS commitments (
    partition TEXT NOT NULL, transaction_uid TEXT NOT NULL, requester TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, delivery TEXT NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (partition, transaction_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS commitments_delivery ON commitments (partition, delivery, created);
"""

_MPPS_COLS = "partition, sop_uid, status, attrs, study_uids, created, updated, version"


def _mpps(r: tuple[Any, ...]) -> MppsRecord:
    return MppsRecord(r[0], r[1], r[2], orjson.loads(r[3]), tuple(orjson.loads(r[4])), r[5], r[6], r[7])


def commitment_body(record: CommitmentRecord) -> bytes:
    """The lists and notes of a commitment record as JSON (shared with the DynamoDB adapter)."""
    return orjson.dumps({
        "requested": [[r.sop_class_uid, r.sop_instance_uid] for r in record.requested],
        "committed": [[r.sop_class_uid, r.sop_instance_uid] for r in record.committed],
        "failed": [[r.sop_class_uid, r.sop_instance_uid, r.reason] for r in record.failed],
        "note": record.note,
    })


def commitment_from(partition: str, transaction_uid: str, requester: str, created: str, updated: str,
                    delivery: str, body: bytes | str) -> CommitmentRecord:
    b = orjson.loads(body)
    return CommitmentRecord(
        partition, transaction_uid, requester,
        tuple(SopRef(c, i) for c, i in b["requested"]), created,
        tuple(SopRef(c, i) for c, i in b["committed"]),
        tuple(FailedRef(c, i, int(n)) for c, i, n in b["failed"]),
        delivery, updated, b.get("note", ""),
    )


class SqliteMppsStore(SqliteStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    # -- MPPS ---------------------------------------------------------------------------------------

    def create_mpps(self, record: MppsRecord) -> bool:
        cur = self._db().execute(
            f"INSERT OR IGNORE INTO mpps ({_MPPS_COLS}) VALUES (?,?,?,?,?,?,?,?)",
            (record.partition, record.sop_uid, record.status, orjson.dumps(record.attrs),
             orjson.dumps(list(record.study_uids)), record.created, record.updated, record.version),
        )
        return cur.rowcount == 1

    def get_mpps(self, partition: str, sop_uid: str) -> MppsRecord | None:
        row = self._db().execute(
            f"SELECT {_MPPS_COLS} FROM mpps WHERE partition=? AND sop_uid=?", (partition, sop_uid)
        ).fetchone()
        return None if row is None else _mpps(row)

    def replace_mpps(self, record: MppsRecord, expected_version: int) -> bool:
        cur = self._db().execute(
            "UPDATE mpps SET status=?, attrs=?, study_uids=?, updated=?, version=?"
            " WHERE partition=? AND sop_uid=? AND version=?",
            (record.status, orjson.dumps(record.attrs), orjson.dumps(list(record.study_uids)),
             record.updated, record.version, record.partition, record.sop_uid, expected_version),
        )
        return cur.rowcount == 1

    def list_mpps(self, partition: str, status: str | None = None) -> list[MppsRecord]:
        sql = f"SELECT {_MPPS_COLS} FROM mpps WHERE partition=?"
        args: tuple[str, ...] = (partition,)
        if status is not None:
            sql, args = sql + " AND status=?", (partition, status)
        rows = self._db().execute(sql + " ORDER BY created, sop_uid", args).fetchall()
        return [_mpps(r) for r in rows]

    # -- storage commitment -------------------------------------------------------------------------

    def create_commitment(self, record: CommitmentRecord) -> bool:
        cur = self._db().execute(
            "INSERT OR IGNORE INTO commitments (partition, transaction_uid, requester, created, updated,"
            " delivery, body) VALUES (?,?,?,?,?,?,?)",
            (record.partition, record.transaction_uid, record.requester, record.created,
             record.updated or record.created, record.delivery, commitment_body(record)),
        )
        return cur.rowcount == 1

    def put_commitment(self, record: CommitmentRecord) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO commitments (partition, transaction_uid, requester, created, updated,"
            " delivery, body) VALUES (?,?,?,?,?,?,?)",
            (record.partition, record.transaction_uid, record.requester, record.created,
             record.updated or record.created, record.delivery, commitment_body(record)),
        )

    def get_commitment(self, partition: str, transaction_uid: str) -> CommitmentRecord | None:
        row = self._db().execute(
            "SELECT partition, transaction_uid, requester, created, updated, delivery, body FROM commitments"
            " WHERE partition=? AND transaction_uid=?", (partition, transaction_uid)
        ).fetchone()
        return None if row is None else commitment_from(*row)

    def list_commitments(self, partition: str, delivery: str | None = None) -> list[CommitmentRecord]:
        sql = ("SELECT partition, transaction_uid, requester, created, updated, delivery, body"
               " FROM commitments WHERE partition=?")
        args: tuple[str, ...] = (partition,)
        if delivery is not None:
            sql, args = sql + " AND delivery=?", (partition, delivery)
        rows = self._db().execute(sql + " ORDER BY created, transaction_uid", args).fetchall()
        return [commitment_from(*r) for r in rows]

