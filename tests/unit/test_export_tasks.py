"""The export task queue: embedded (SQLite) and SQS (moto)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pacs.events.tasks import SqliteTaskQueue, SqsTaskQueue

from tests.unit.aws import fake_aws_credentials


def test_embedded_at_least_once_retries_and_dead_letters(tmp_path: Path) -> None:
    q = SqliteTaskQueue(tmp_path / "tasks.db", max_attempts=2, visibility_timeout=0.2)
    with pytest.raises(ValueError, match="exportJob"):
        q.send({"step": "plan"})
    q.send({"exportJob": "j1", "step": "plan"})
    q.send_many([{"exportJob": "j1", "step": "series", "task": 0}])
    first, second = q.receive(10)
    assert first.body == {"exportJob": "j1", "step": "plan"} and first.attempts == 1
    q.ack(first.id)
    assert q.receive(10, wait=0) == []  # the other one is invisible until its timeout
    again = q.receive(10, wait=2)  # not acknowledged: delivered again after the visibility timeout
    assert [t.body for t in again] == [second.body] and again[0].attempts == 2
    q.fail(again[0], "boom", retry_after=0)  # second failed attempt: dead
    assert q.depth() == 0
    dead = q.dead_letters()
    assert [(d.body["task"], d.error) for d in dead] == [(0, "boom")]
    assert q.redrive() == 1 and q.depth() == 1
    t = q.receive(1)[0]
    q.fail(t, "never", permanent=True)
    assert q.depth() == 0 and len(q.dead_letters()) == 1
    q.close()


def test_sqs_send_receive_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import moto

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="anon")["QueueUrl"]
        dlq = sqs.create_queue(QueueName="anon-dlq")["QueueUrl"]
        q = SqsTaskQueue(url, dlq_url=dlq, client=sqs)
        q.send({"exportJob": "j1", "step": "plan"})
        q.send({"exportJob": "j1", "step": "finish"})
        got = q.receive(10) + q.receive(10)
        assert sorted(t.body["step"] for t in got) == ["finish", "plan"]
        q.send_many([{"exportJob": "j1", "step": "series", "task": n} for n in range(23)])
        many = []
        while batch := q.receive(10):
            many += batch
        assert sorted(t.body["task"] for t in many) == list(range(23))
        q.ack(*(t.id for t in many))
        q.ack(got[0].id)
        q.fail(got[1], "corrupt", permanent=True)
        assert q.depth() == 0
        moved = sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
        assert moved[0]["MessageAttributes"]["error"]["StringValue"] == "corrupt"
