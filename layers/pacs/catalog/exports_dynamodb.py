"""DynamoDB export-job records (AWS), items in the catalog's table. Upper-case prefixes never collide
with a study's `{partition}#{StudyUID}` (partition names are lower-case):

    PK = EXPORT#{job}           SK = JOB                 the job: request, status, counters, failures
    PK = EXPORTS#{partition}    SK = {created}#{job}     one per job: recent jobs are one Query, no Scan

A task's report is one conditional UpdateItem: `ADD` of the counters and of the task's number to the
set `finished`, on condition that the set does not contain it yet; it returns the new set's size, so
the task that completes the job knows it, and a redelivered task changes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from pynamodb.attributes import ListAttribute, NumberAttribute, NumberSetAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from pacs.catalog.exports import ExportJob, Status, TaskOutcome, TaskReport, capped, now_iso

JOB_SK = "JOB"
_CONDITION_FAILED = "ConditionalCheckFailedException"


class _JobItem(Model):
    pk = UnicodeAttribute(hash_key=True, attr_name="PK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")
    partition = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    created = UnicodeAttribute(null=True)
    updated = UnicodeAttribute(null=True)
    request = UnicodeAttribute(null=True)
    n_series = NumberAttribute(null=True)
    n_instances = NumberAttribute(null=True)
    tasks = NumberAttribute(null=True)
    done = NumberAttribute(null=True)
    failed = NumberAttribute(null=True)
    held_back = NumberAttribute(null=True)
    size = NumberAttribute(null=True)
    finished = NumberSetAttribute(null=True)
    failures = ListAttribute(null=True)  # type: ignore[var-annotated]
    output = UnicodeAttribute(null=True)
    error = UnicodeAttribute(null=True)
    job = UnicodeAttribute(null=True)  # on listing items


def _model(table: str, region_name: str, endpoint: str | None) -> type[_JobItem]:
    class Item(_JobItem):
        class Meta:
            table_name = table
            region = region_name
            host = endpoint

    return Item


def _pk(job_id: str) -> str:
    return f"EXPORT#{job_id}"


def _conflict(e: Exception) -> bool:
    return getattr(e, "cause_response_code", None) == _CONDITION_FAILED


def _job(it: _JobItem) -> ExportJob:
    return ExportJob(
        id=it.pk.split("#", 1)[1], partition=it.partition or "", request=orjson.loads(it.request or "{}"),
        status=it.status or "queued", created=it.created or "", updated=it.updated or "",  # type: ignore[arg-type]
        series=int(it.n_series or 0), instances=int(it.n_instances or 0), tasks=int(it.tasks or 0),
        tasks_done=len(it.finished or ()), done=int(it.done or 0), failed=int(it.failed or 0),
        held_back=int(it.held_back or 0), bytes=int(it.size or 0),
        failures=[dict(f) for f in (it.failures or [])], output=orjson.loads(it.output or "{}"),
        error=it.error or "")


class DynamoExportJobs:
    def __init__(self, table_name: str, *, region: str = "us-east-1", host: str | None = None) -> None:
        self._m = _model(table_name, region, host)

    def create(self, job: ExportJob) -> None:
        m = self._m
        item = m(_pk(job.id), JOB_SK, partition=job.partition, status=job.status, created=job.created,
                 updated=job.updated or job.created, request=orjson.dumps(job.request).decode(),
                 n_series=job.series, n_instances=job.instances, tasks=job.tasks, done=job.done,
                 failed=job.failed, held_back=job.held_back, size=job.bytes, failures=list(job.failures),
                 output=orjson.dumps(job.output).decode(), error=job.error or None)
        listed = m(f"EXPORTS#{job.partition}", f"{job.created}#{job.id}", job=job.id)
        with TransactWrite(connection=m._get_connection().connection) as tx:  # both items or neither
            tx.save(item, condition=m.pk.does_not_exist())
            tx.save(listed)

    def get(self, job_id: str) -> ExportJob | None:
        try:
            return _job(self._m.get(_pk(job_id), JOB_SK, consistent_read=True))
        except DoesNotExist:
            return None

    def recent(self, partition: str, limit: int = 50) -> list[ExportJob]:
        m = self._m
        ids = [i.job for i in m.query(f"EXPORTS#{partition}", scan_index_forward=False, limit=limit) if i.job]
        found = {i.pk: _job(i) for i in m.batch_get([(_pk(j), JOB_SK) for j in ids], consistent_read=True)}
        return [found[_pk(j)] for j in ids if _pk(j) in found]

    def plan(self, job_id: str, series: int, instances: int, tasks: int) -> bool:
        m = self._m
        try:
            m(_pk(job_id), JOB_SK).update(
                actions=[m.status.set("running"), m.n_series.set(series), m.n_instances.set(instances),
                         m.tasks.set(tasks), m.updated.set(now_iso())],
                condition=m.status == "queued")
        except UpdateError as e:
            if _conflict(e):
                return False
            raise
        return True

    def finish_task(self, job_id: str, task: int, report: TaskReport) -> TaskOutcome:
        m = self._m
        current = self.get(job_id)
        if current is None:
            raise KeyError(job_id)
        actions: list[Any] = [m.finished.add({task}), m.done.add(report.done), m.failed.add(report.failed),
                              m.held_back.add(report.held_back), m.size.add(report.bytes),
                              m.updated.set(now_iso())]
        more = capped(len(current.failures), report.failures)  # parallel tasks may pass the cap a little
        if more:
            actions.append(m.failures.set((m.failures | []).append(more)))
        item = m(_pk(job_id), JOB_SK)
        try:
            item.update(actions=actions, condition=m.pk.exists() & ~m.finished.contains(task))
        except UpdateError as e:
            if not _conflict(e):
                raise
            again = self.get(job_id)
            if again is None:
                raise KeyError(job_id) from None
            return TaskOutcome(False, again.tasks_done, again.tasks)
        return TaskOutcome(True, len(item.finished or ()), int(item.tasks or 0))

    def set_status(self, job_id: str, status: Status, *, only_from: frozenset[str] | set[str],
                   output: dict[str, Any] | None = None, error: str | None = None) -> bool:
        m = self._m
        actions: list[Any] = [m.status.set(status), m.updated.set(now_iso())]
        if output is not None:
            actions.append(m.output.set(orjson.dumps(output).decode()))
        if error is not None:
            actions.append(m.error.set(error))
        try:
            m(_pk(job_id), JOB_SK).update(actions=actions, condition=m.status.is_in(*sorted(only_from)))
        except UpdateError as e:
            if _conflict(e):
                return False
            raise
        return True

    def close(self) -> None:
        pass


