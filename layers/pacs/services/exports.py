"""Export jobs: a selection of studies / series (or a QIDO query) de-identified (`pacs.deid`) into a
destination (another partition, a ZIP or Part 10 files in the exports store, a remote node), run as
tasks on a queue so both backends share one path: the embedded worker of `pacs up`
(`pacs.services.export_worker`) and, on AWS, the anonymizer function.

Task messages (JSON objects, each with `exportJob`):

    {"exportJob": ID, "step": "plan"}                      expand the selection, record the totals,
                                                           queue the series tasks
    {"exportJob": ID, "step": "series", "task": N, "study": UID, "series": UID, "instances": [UID…]}
    {"exportJob": ID, "step": "finish"}                    the ZIP assembled; the job marked done

Every step is idempotent: a task's counts are recorded once, atomically with its completion mark
(`ExportJobs.finish_task`), its files are rewritten identically (de-identification is deterministic),
and the task that completes the last one queues `finish` (again when delivered again). Originals are
only read.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pacs.backends import Backend
from pacs.catalog.exports import FINAL, ExportJob, ExportJobs, TaskReport, new_job_id
from pacs.catalog.matching import condition
from pacs.deid import Deidentifier, DeidError, HeldBack, Profile
from pacs.deid.project import Deidentifiers
from pacs.errors import NotFound
from pacs.events.tasks import JOB_KEY, TaskQueue, task_queue
from pacs.services.export_output import (
    FilesOutput,
    NodeOutput,
    Output,
    PartitionOutput,
    PermanentExportFailure,
    export_prefix,
    files_prefix,
)
from pacs.services.export_request import ExportRequestError, parse_request
from pacs.services.export_zip import write_stream, zip_stream
from pacs.services.query import Level, QueryRequest, QueryService
from pacs.storage.keys import check_partition, instance_key

__all__ = ["ExportRequestError", "ExportService", "PermanentExportFailure"]

log = logging.getLogger("pacs.exports")

#: Instances per task: a bigger series is split into chunks (progress, parallel workers, retries).
CHUNK = 50


@dataclass(slots=True)
class _Counts:
    done: int = 0
    failed: int = 0
    held_back: int = 0
    bytes: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, sop: str, reason: str, *, held_back: bool = False) -> None:
        if held_back:
            self.held_back += 1
        else:
            self.failed += 1
        self.failures.append({"sop": sop, "reason": reason, **({"heldBack": True} if held_back else {})})


class ExportService:
    def __init__(self, backend: Backend, jobs: ExportJobs, queue: TaskQueue, *, chunk: int = CHUNK) -> None:
        self.backend, self.jobs, self.queue, self.chunk = backend, jobs, queue, chunk
        self.settings = backend.settings
        self.partition = backend.settings.partition
        self._deid: dict[str, Deidentifier] = {}
        self._deidentifiers: Deidentifiers | None = None

    @classmethod
    def from_backend(cls, backend: Backend) -> ExportService:
        """The job records beside the backend's catalog, the task queue of its kind."""
        s = backend.settings
        jobs: ExportJobs
        if s.backend == "aws":
            from pacs.catalog.exports_dynamodb import DynamoExportJobs

            jobs = DynamoExportJobs(s.table, region=s.region, host=s.endpoint_url or None)
        else:
            from pacs.catalog.exports_sqlite import SqliteExportJobs

            jobs = SqliteExportJobs(s.data_dir / "catalog.db")
        return cls(backend, jobs, task_queue(s))

    def close(self) -> None:
        self.jobs.close()
        self.queue.close()

    # -- the API's side ------------------------------------------------------------------------------

    def create(self, request: Any) -> ExportJob:
        """Check the request (ExportRequestError naming why it cannot run), record a queued job and
        queue its plan."""
        req = parse_request(request, source=self.partition, nodes=self.backend.nodes,
                            partitions=self.settings.export_partitions)
        self._check_listed(req)
        job = ExportJob(new_job_id(), self.partition, req, output={"destination": req["destination"]})
        self.jobs.create(job)
        try:
            self.queue.send({JOB_KEY: job.id, "step": "plan"})
        except Exception as exc:
            self.jobs.set_status(job.id, "failed", only_from={"queued"}, error=f"not queued: {exc}")
            raise
        return job

    def _check_listed(self, req: dict[str, Any]) -> None:
        catalog = self.backend.catalog
        for study in req["studies"]:
            if catalog.get_study(self.partition, study) is None:
                raise ExportRequestError(f"study {study} is not in the archive")
        for s in req["series"]:
            match = [condition("SeriesInstanceUID", s["series"])]
            if not catalog.query_series(self.partition, s["study"], match, limit=1).rows:
                raise ExportRequestError(f"series {s['series']} of study {s['study']} is not in the archive")

    def get(self, job_id: str) -> ExportJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.partition == self.partition else None

    def recent(self, limit: int = 50) -> list[ExportJob]:
        return self.jobs.recent(self.partition, limit)

    def cancel(self, job_id: str) -> bool:
        """Stop a job that has not finished (tasks still queued then do nothing)."""
        return self.jobs.set_status(job_id, "cancelled", only_from={"queued", "running"})

    def zip_key(self, job: ExportJob, token: str) -> str:
        return export_prefix(job.partition, job.id) + f"export-{job.id}-{token}.zip"

    # -- the worker's side ---------------------------------------------------------------------------

    def handle_task(self, message: dict[str, Any]) -> None:
        """Run one task message; PermanentExportFailure when it can never succeed (the job is marked
        failed), any other exception when it is worth delivering again."""
        job_id = message.get(JOB_KEY)
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise PermanentExportFailure(f"no export job {job_id!r}")
        if job.status in FINAL:
            return  # finished, failed or cancelled: a late or repeated task does nothing
        step = message.get("step", "plan")
        try:
            if step == "plan":
                self._plan(job)
            elif step == "series":
                self._series(job, message)
            elif step == "finish":
                self._finish(job)
            else:
                raise PermanentExportFailure(f"unknown export step {step!r}")
        except PermanentExportFailure as exc:
            self.jobs.set_status(job.id, "failed", only_from={"queued", "running"}, error=str(exc))
            raise

    def handle_delivery(self, message: dict[str, Any], *, attempt: int, max_attempts: int) -> str:
        """One delivery of a task by a queue with a redrive policy (the anonymizer function on SQS:
        `attempt` = ApproximateReceiveCount, `max_attempts` = maxReceiveCount). Returns "done", or
        "dropped" for a task that can never succeed (the job is marked failed), or "given up" when the
        last delivery failed (its instances counted as failed): the record is settled either way.
        Raises on another failure: report the record failed, it is delivered again."""
        try:
            self.handle_task(message)
        except PermanentExportFailure as exc:
            log.warning("export task %s dropped: %s", message, exc)
            return "dropped"
        except Exception as exc:
            if attempt < max_attempts:
                raise
            log.warning("export task %s given up after %d deliveries: %s", message, attempt, exc)
            self.abandon(message, f"{type(exc).__name__}: {exc}")
            return "given up"
        return "done"

    def abandon(self, message: dict[str, Any], reason: str) -> None:
        """A task given up (dead-lettered): its instances counted as failed, the job finished without
        them; a plan or finish given up fails the job."""
        job = self.jobs.get(str(message.get(JOB_KEY)))
        if job is None or job.status in FINAL:
            return
        if message.get("step") != "series":
            self.jobs.set_status(job.id, "failed", only_from={"queued", "running"}, error=reason)
            return
        counts = _Counts()
        for sop in message.get("instances", []):
            counts.fail(sop, f"given up: {reason}")
        self._report(job, int(message["task"]), counts)

    # -- steps ----------------------------------------------------------------------------------------

    def _selected(self, job: ExportJob) -> list[tuple[str, str]]:
        """(study, series) of the selection, in a stable order, without repeats."""
        req, catalog, p = job.request, self.backend.catalog, job.partition
        found: dict[tuple[str, str], None] = {}
        for study in req.get("studies", []):
            for s in catalog.query_series(p, study, []).rows:
                found[(study, s.series_uid)] = None
        for s in req.get("series", []):
            found[(s["study"], s["series"])] = None
        if req.get("query"):
            conds = [condition(k, v) for k, v in req["query"].items()]
            query = QueryService(catalog, p)
            for item in query.search(QueryRequest(Level.SERIES, conds, include=None)).items:
                study = item["0020000D"]["Value"][0]
                series = item["0020000E"]["Value"][0]
                found[(study, series)] = None
        return list(found)

    @staticmethod
    def plan_key(job: ExportJob) -> str:
        """Where a job's plan is kept: beside derived data in the archive's store, never in the export
        location (it lists the original UIDs)."""
        return f"{check_partition(job.partition)}/derived/exports/{job.id}/plan.json"

    def _plan(self, job: ExportJob) -> None:
        plan_key = self.plan_key(job)
        store = self.backend.store
        if job.status == "queued":
            tasks: list[dict[str, Any]] = []
            series = 0
            for study, series_uid in self._selected(job):
                rows = self.backend.catalog.query_instances(job.partition, study, series_uid, []).rows
                sops = sorted(r.sop_uid for r in rows)
                series += bool(sops)
                for start in range(0, len(sops), self.chunk):
                    tasks.append({JOB_KEY: job.id, "step": "series", "task": len(tasks), "study": study,
                                  "series": series_uid, "instances": sops[start:start + self.chunk]})
            if not tasks:
                raise PermanentExportFailure("the selection matched no instance")
            store.put(plan_key, orjson.dumps(tasks), content_type="application/json")
            instances = sum(len(t["instances"]) for t in tasks)
            self.jobs.plan(job.id, series, instances, len(tasks))
        try:  # planned (now, or by an earlier delivery of this message): queue every task
            tasks = orjson.loads(store.get(plan_key))
        except NotFound:
            raise PermanentExportFailure("the job's plan is gone") from None
        self.queue.send_many(tasks)

    def _deidentifier(self, job: ExportJob) -> Deidentifier:
        deid = self._deid.get(job.id)
        if deid is None:
            req = job.request
            profile = Profile.parse(req.get("profile", "basic"), req.get("options", []))
            if self._deidentifiers is None:  # the secret and pixel rules read at the first job's first task
                self._deidentifiers = Deidentifiers.of(self.settings, self.backend.exports_store)
            deid = self._deid[job.id] = self._deidentifiers.make(
                profile, req.get("project", "default"), partition=job.partition,
                crosswalk=bool(req.get("crosswalk", False)))
        return deid

    def _output(self, job: ExportJob) -> Output:
        dest = job.request["destination"]
        if "partition" in dest:
            return PartitionOutput(self.backend, dest["partition"])
        if "node" in dest:
            s = self.settings
            return NodeOutput(self.backend.nodes, dest["node"], s.ae_title, max_pdu=s.max_pdu or (1 << 20),
                              timeout=float(s.dimse_timeout), spool_dir=self.backend.spool_dir)
        return FilesOutput(self.backend.exports_store, job.partition, job.id)

    def _series(self, job: ExportJob, message: dict[str, Any]) -> None:
        if job.status != "running":
            return
        try:
            study, series, sops, task = (message["study"], message["series"], list(message["instances"]),
                                         int(message["task"]))
        except (KeyError, TypeError, ValueError):
            raise PermanentExportFailure(f"a series task lacks study, series, instances or task: {message}") \
                from None
        deid = self._deidentifier(job)
        counts = _Counts()
        sizes: dict[str, int] = {}
        output = self._output(job)
        try:
            for sop in sops:
                try:
                    data = self.backend.store.get(instance_key(job.partition, study, series, sop))
                except NotFound:
                    counts.fail(sop, "no longer in the archive")
                    continue
                try:
                    out = deid.part10(data)
                except HeldBack as exc:
                    counts.fail(sop, str(exc) or "held back", held_back=True)
                    continue
                except Exception as exc:  # DeidError, or a data set the engine could not handle
                    what = "" if isinstance(exc, DeidError) else f"{type(exc).__name__}: "
                    counts.fail(sop, f"{what}{exc}")
                    continue
                refused = output.add(sop, out)
                if refused:
                    counts.fail(sop, refused)
                else:
                    sizes[sop] = len(out.data)
            for sop, reason in output.flush().items():
                sizes.pop(sop, None)
                counts.fail(sop, reason)
        finally:
            output.close()
        counts.done, counts.bytes = len(sizes), sum(sizes.values())
        self._report(job, task, counts)

    def _report(self, job: ExportJob, task: int, counts: _Counts) -> None:
        outcome = self.jobs.finish_task(job.id, task, TaskReport(
            counts.done, counts.failed, counts.held_back, counts.bytes, tuple(counts.failures)))
        if outcome.last:
            self.queue.send({JOB_KEY: job.id, "step": "finish"})

    def _finish(self, job: ExportJob) -> None:
        if job.status != "running" or job.tasks_done < job.tasks:
            return
        dest = job.request["destination"]
        output: dict[str, Any] = {"destination": dest}
        store = self.backend.exports_store
        if dest.get("type") == "files":
            prefix = files_prefix(job.partition, job.id)
            output.update(prefix=prefix, **self._where(prefix))
        elif dest.get("type") == "zip":
            prefix = files_prefix(job.partition, job.id)
            files = list(store.list(prefix))
            # A key of this delivery's own: a finish delivered twice at once (a visibility timeout passed)
            # never overwrites the archive the job records; only the one that records it removes the files.
            key = self.zip_key(job, secrets.token_hex(4))
            entries = ((f.key, f.key[len(prefix):], f.size) for f in files)
            spool = self.backend.spool_dir if isinstance(self.backend.spool_dir, Path) else None
            size = write_stream(store, key, zip_stream(store, entries), spool_dir=spool)
            output.update(zip=key, size=size, files=len(files), download=f"/exports/{job.id}/download",
                          **self._where(key))
            if not self._done(job, output):
                store.delete(key)
                return
            for f in files:
                store.delete(f.key)
            return
        elif "partition" in dest:
            output["partition"] = dest["partition"]
        else:
            output["node"] = dest["node"]
        self._done(job, output)

    def _done(self, job: ExportJob, output: dict[str, Any]) -> bool:
        """Record the job finished (failed when nothing was exported); False when another delivery of
        `finish` recorded it first."""
        if job.done == 0:
            recorded = self.jobs.set_status(job.id, "failed", only_from={"running"}, output=output,
                                            error="no instance could be exported")
        else:
            recorded = self.jobs.set_status(job.id, "done", only_from={"running"}, output=output)
        if recorded:
            self.backend.store.delete(self.plan_key(job))
        return recorded

    def _where(self, prefix: str) -> dict[str, str]:
        s = self.settings
        if s.backend == "aws":
            return {"bucket": s.exports_bucket or s.bucket}
        return {"path": str((s.data_dir / "objects" / prefix).resolve())}
