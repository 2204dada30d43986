"""Export-job records (`ExportJobs`), one contract for both adapters: SQLite and DynamoDB (moto)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.catalog.exports import FAILURES_CAP, ExportJob, ExportJobs, TaskReport, new_job_id

from tests.unit.aws import fake_aws_credentials


@pytest.fixture(params=["sqlite", "dynamodb"])
def jobs(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ExportJobs]:
    if request.param == "sqlite":
        from pacs.catalog.exports_sqlite import SqliteExportJobs

        store = SqliteExportJobs(tmp_path / "catalog.db")
        yield store
        store.close()
        return
    import moto
    from pacs.catalog.dynamodb import DynamoCatalog
    from pacs.catalog.exports_dynamodb import DynamoExportJobs

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        DynamoCatalog("pacs-exports-test", create=True).close()
        dynamo = DynamoExportJobs("pacs-exports-test")
        yield dynamo
        dynamo.close()


def job(partition: str = "default") -> ExportJob:
    return ExportJob(new_job_id(), partition, {"studies": ["1.2.3"], "destination": {"type": "zip"}},
                     output={"destination": {"type": "zip"}})


def test_create_get_and_recent(jobs: ExportJobs) -> None:
    a, b, other = job(), job(), job("research")
    b.created = "2099-01-01T00:00:00.000Z"
    for j in (a, b, other):
        jobs.create(j)
    got = jobs.get(a.id)
    assert got is not None and got.request == a.request and got.status == "queued" and got.output == a.output
    assert jobs.get("nope") is None
    assert [j.id for j in jobs.recent("default")] == [b.id, a.id]
    assert [j.id for j in jobs.recent("default", limit=1)] == [b.id]
    assert [j.id for j in jobs.recent("research")] == [other.id]


def test_plan_once_then_tasks_count_once(jobs: ExportJobs) -> None:
    j = job()
    jobs.create(j)
    assert jobs.plan(j.id, series=2, instances=5, tasks=2)
    assert not jobs.plan(j.id, series=9, instances=9, tasks=9)  # a redelivered plan changes nothing
    first = jobs.finish_task(j.id, 0, TaskReport(done=2, failed=1, bytes=100,
                                                 failures=({"sop": "1.1", "reason": "bad"},)))
    assert first.counted and not first.last and (first.tasks_done, first.tasks) == (1, 2)
    again = jobs.finish_task(j.id, 0, TaskReport(done=2, failed=1, bytes=100,
                                                 failures=({"sop": "1.1", "reason": "bad"},)))
    assert not again.counted and not again.last
    last = jobs.finish_task(j.id, 1, TaskReport(done=1, held_back=1, bytes=50,
                                                failures=({"sop": "1.2", "reason": "burned in", "heldBack": True},)))
    assert last.counted and last.last
    got = jobs.get(j.id)
    assert got is not None
    assert (got.status, got.series, got.instances, got.tasks, got.tasks_done) == ("running", 2, 5, 2, 2)
    assert (got.done, got.failed, got.held_back, got.bytes) == (3, 1, 1, 150)
    assert [f["sop"] for f in got.failures] == ["1.1", "1.2"]
    with pytest.raises(KeyError):
        jobs.finish_task("nope", 0, TaskReport())


def test_failures_are_capped_counts_are_not(jobs: ExportJobs) -> None:
    j = job()
    jobs.create(j)
    jobs.plan(j.id, 1, FAILURES_CAP + 10, 2)
    many = tuple({"sop": f"1.{n}", "reason": "x"} for n in range(FAILURES_CAP - 5))
    jobs.finish_task(j.id, 0, TaskReport(failed=len(many), failures=many))
    jobs.finish_task(j.id, 1, TaskReport(failed=15, failures=tuple({"sop": f"2.{n}", "reason": "y"}
                                                                   for n in range(15))))
    got = jobs.get(j.id)
    assert got is not None and got.failed == FAILURES_CAP + 10 and len(got.failures) == FAILURES_CAP


def test_status_moves_only_from_the_given_ones(jobs: ExportJobs) -> None:
    j = job()
    jobs.create(j)
    assert not jobs.set_status(j.id, "done", only_from={"running"})
    assert jobs.set_status(j.id, "failed", only_from={"queued", "running"}, error="nothing matched")
    assert not jobs.set_status(j.id, "done", only_from={"queued", "running"}, output={"zip": "k"})
    got = jobs.get(j.id)
    assert got is not None and got.status == "failed" and got.error == "nothing matched" and got.output == j.output
    k = job()
    jobs.create(k)
    jobs.plan(k.id, 1, 1, 1)
    assert jobs.set_status(k.id, "done", only_from={"running"}, output={"zip": "a/b.zip"})
    got = jobs.get(k.id)
    assert got is not None and got.output == {"zip": "a/b.zip"} and got.status == "done"


def test_parallel_tasks_lose_no_count(jobs: ExportJobs) -> None:
    j = job()
    jobs.create(j)
    n = 16
    jobs.plan(j.id, n, n * 3, n)
    lasts: list[int] = []

    def report(task: int) -> None:
        for _ in range(2):  # each delivered twice
            if jobs.finish_task(j.id, task, TaskReport(done=2, failed=1, bytes=10)).last:
                lasts.append(task)

    threads = [threading.Thread(target=report, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = jobs.get(j.id)
    assert got is not None and (got.tasks_done, got.done, got.failed, got.bytes) == (n, 2 * n, n, 10 * n)
    assert len(lasts) >= 1
