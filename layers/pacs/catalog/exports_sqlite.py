"""SQLite export-job records (embedded): tables `export_jobs` and `export_tasks` in the catalog's
database. A task's report is one transaction: its mark inserted if absent, then the counters moved
(`UPDATE … = … + ?`), so parallel processes never lose a count and a redelivered task counts once."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from pacs.catalog.exports import ExportJob, Status, TaskOutcome, TaskReport, capped, now_iso
from pacs.catalog.sqlite_connections import SqliteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS export_jobs (
    id TEXT PRIMARY KEY, partition TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, request BLOB NOT NULL, series INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0, tasks INTEGER NOT NULL DEFAULT 0,
    tasks_done INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, held_back INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, failures BLOB NOT NULL, output BLOB NOT NULL,
    error TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS export_jobs_recent ON export_jobs (partition, created DESC);
CREATE TABLE IF NOT EXISTS export_tasks (
    job TEXT NOT NULL, task INTEGER NOT NULL, PRIMARY KEY (job, task)
) WITHOUT ROWID;
"""
_COLS = ("id, partition, status, created, updated, request, series, instances, tasks, tasks_done, done,"
         " failed, held_back, bytes, failures, output, error")


def _job(r: tuple[Any, ...]) -> ExportJob:
    return ExportJob(
        id=r[0], partition=r[1], status=r[2], created=r[3], updated=r[4], request=orjson.loads(r[5]),
        series=r[6], instances=r[7], tasks=r[8], tasks_done=r[9], done=r[10], failed=r[11],
        held_back=r[12], bytes=r[13], failures=orjson.loads(r[14]), output=orjson.loads(r[15]),
        error=r[16])


class SqliteExportJobs(SqliteStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    def create(self, job: ExportJob) -> None:
        self._write(lambda db: db.execute(
            f"INSERT INTO export_jobs ({_COLS}) VALUES ({','.join('?' * 17)})",
            (job.id, job.partition, job.status, job.created, job.updated or job.created,
             orjson.dumps(job.request), job.series, job.instances, job.tasks, job.tasks_done, job.done,
             job.failed, job.held_back, job.bytes, orjson.dumps(job.failures), orjson.dumps(job.output),
             job.error)))

    def get(self, job_id: str) -> ExportJob | None:
        r = self._db().execute(f"SELECT {_COLS} FROM export_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if r is None else _job(r)

    def recent(self, partition: str, limit: int = 50) -> list[ExportJob]:
        rows = self._db().execute(
            f"SELECT {_COLS} FROM export_jobs WHERE partition = ? ORDER BY created DESC, id DESC LIMIT ?",
            (partition, limit)).fetchall()
        return [_job(r) for r in rows]

    def plan(self, job_id: str, series: int, instances: int, tasks: int) -> bool:
        changed: int = self._write(lambda db: db.execute(
            "UPDATE export_jobs SET status = 'running', series = ?, instances = ?, tasks = ?, updated = ?"
            " WHERE id = ? AND status = 'queued'", (series, instances, tasks, now_iso(), job_id)).rowcount)
        return changed == 1

    def finish_task(self, job_id: str, task: int, report: TaskReport) -> TaskOutcome:
        def finish(db: sqlite3.Connection) -> TaskOutcome:
            row = db.execute("SELECT failures FROM export_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            counted = db.execute("INSERT OR IGNORE INTO export_tasks (job, task) VALUES (?, ?)",
                                 (job_id, task)).rowcount == 1
            if counted:
                failures = orjson.loads(row[0])
                failures += capped(len(failures), report.failures)
                db.execute(
                    "UPDATE export_jobs SET tasks_done = tasks_done + 1, done = done + ?,"
                    " failed = failed + ?, held_back = held_back + ?, bytes = bytes + ?,"
                    " failures = ?, updated = ? WHERE id = ?",
                    (report.done, report.failed, report.held_back, report.bytes, orjson.dumps(failures),
                     now_iso(), job_id))
            done, total = db.execute("SELECT tasks_done, tasks FROM export_jobs WHERE id = ?",
                                     (job_id,)).fetchone()
            return TaskOutcome(counted, int(done), int(total))

        outcome: TaskOutcome = self._write(finish)
        return outcome

    def set_status(self, job_id: str, status: Status, *, only_from: frozenset[str] | set[str],
                   output: dict[str, Any] | None = None, error: str | None = None) -> bool:
        sets: list[str] = ["status = ?", "updated = ?"]
        args: list[object] = [status, now_iso()]
        if output is not None:
            sets, args = [*sets, "output = ?"], [*args, orjson.dumps(output)]
        if error is not None:
            sets, args = [*sets, "error = ?"], [*args, error]
        marks = ",".join("?" * len(only_from))
        sql = f"UPDATE export_jobs SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})"
        changed: int = self._write(lambda db: db.execute(sql, (*args, job_id, *sorted(only_from))).rowcount)
        return changed == 1
