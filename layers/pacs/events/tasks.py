"""The task queue of export jobs (`pacs.services.exports`): JSON objects, each with `exportJob`.

- `SqliteTaskQueue`: embedded (`DATA_DIR/tasks.db`), durable, at-least-once with a visibility timeout
  and dead letters: the embedded queue of `pacs.events.local` with JSON bodies. `pacs up` consumes
  it (`pacs.services.export_worker`).
- `SqsTaskQueue`: AWS, the anonymizer's queue (PACS_ANONYMIZER_QUEUE_URL); the anonymizer function
  consumes it and hands messages with `exportJob` to `ExportService.handle_task`. Its dead letters
  are SQS's (redrive policy).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
import orjson
from botocore.config import Config

from pacs.config import Settings
from pacs.events.local import SqliteMessageQueue
from pacs.events.sqs import queue_depth

JOB_KEY = "exportJob"


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadTask:
    id: int
    body: dict[str, Any]
    attempts: int
    error: str | None


class TaskQueue(Protocol):
    def send(self, message: dict[str, Any]) -> None:
        """Queue a task durably before returning (ValueError without `exportJob`)."""
        ...

    def send_many(self, messages: list[dict[str, Any]]) -> None:
        """Queue several tasks (in batches where the queue has them)."""
        ...

    def close(self) -> None: ...


class TaskConsumer(TaskQueue, Protocol):
    """The consuming side (the embedded worker)."""

    def receive(self, max_messages: int = 10, wait: float = 0.0) -> list[Task]: ...

    def ack(self, *task_ids: int) -> None: ...

    def fail(self, task: Task, error: str, *, retry_after: float = 1.0, permanent: bool = False) -> None:
        """Deliver again after `retry_after`, or dead-letter (after too many attempts, or at once when
        `permanent`)."""
        ...

    def depth(self) -> int: ...

    def dead_letters(self) -> list[DeadTask]: ...

    def redrive(self) -> int: ...


def _body(message: dict[str, Any]) -> bytes:
    if not isinstance(message, dict) or not isinstance(message.get(JOB_KEY), str):
        raise ValueError(f"a task is a JSON object with {JOB_KEY!r} (the job id)")
    return orjson.dumps(message)


class SqliteTaskQueue(SqliteMessageQueue):
    def send(self, message: dict[str, Any]) -> None:
        self._insert(_body(message))

    def send_many(self, messages: list[dict[str, Any]]) -> None:
        bodies = [_body(m) for m in messages]
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO messages (body, visible_at) VALUES (?, ?)",
                           [(b, time.time()) for b in bodies])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def receive(self, max_messages: int = 10, wait: float = 0.0) -> list[Task]:
        return [Task(i, orjson.loads(b), a) for i, b, a in self._claim(max_messages, wait)]

    def fail(self, task: Task, error: str, *, retry_after: float = 1.0, permanent: bool = False) -> None:
        self._fail(task.id, task.attempts, error, retry_after, dead=permanent)

    def dead_letters(self) -> list[DeadTask]:
        return [DeadTask(i, orjson.loads(b), a, e) for i, b, a, e in self._dead_rows()]


class SqsTaskQueue:
    """Tasks as SQS messages (one task each)."""

    def __init__(self, queue_url: str, *, dlq_url: str = "", client: Any | None = None,
                 endpoint_url: str | None = None, region: str | None = None,
                 visibility_timeout: int = 900) -> None:
        self.queue_url, self.dlq_url, self.visibility_timeout = queue_url, dlq_url, visibility_timeout
        self.client = client or boto3.client(
            "sqs", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, tcp_keepalive=True))
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._receipts: dict[int, str] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=_body(message).decode())

    def send_many(self, messages: list[dict[str, Any]]) -> None:
        """SendMessageBatch, 10 at a time (each at most 256 KB: a task lists at most CHUNK UIDs); the
        entries SQS did not take are sent again one by one."""
        bodies = [_body(m).decode() for m in messages]
        for start in range(0, len(bodies), 10):
            batch = bodies[start:start + 10]
            entries = [{"Id": str(n), "MessageBody": b} for n, b in enumerate(batch)]
            resp = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for failed in resp.get("Failed", []):
                self.client.send_message(QueueUrl=self.queue_url, MessageBody=batch[int(failed["Id"])])

    def receive(self, max_messages: int = 10, wait: float = 0.0) -> list[Task]:
        got = self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=min(20, math.ceil(wait)) if wait > 0 else 0,
            VisibilityTimeout=self.visibility_timeout, AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        out = []
        for m in got:
            try:
                body = orjson.loads(m["Body"])
            except orjson.JSONDecodeError:
                continue  # not a task: left to the redrive policy
            if not isinstance(body, dict) or JOB_KEY not in body:
                continue
            attempts = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            task = Task(next(self._ids), body, attempts)
            with self._lock:
                self._receipts[task.id] = m["ReceiptHandle"]
            out.append(task)
        return out

    def ack(self, *task_ids: int) -> None:
        for i in task_ids:
            with self._lock:
                receipt = self._receipts.pop(i, None)
            if receipt is not None:
                self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)

    def fail(self, task: Task, error: str, *, retry_after: float = 1.0, permanent: bool = False) -> None:
        with self._lock:
            receipt = self._receipts.pop(task.id, None)
        if receipt is None:
            return
        if permanent and self.dlq_url:
            self.client.send_message(QueueUrl=self.dlq_url, MessageBody=orjson.dumps(task.body).decode(),
                                     MessageAttributes={"error": {"DataType": "String",
                                                                  "StringValue": error[:1000] or "-"}})
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
            return
        self.client.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt,
                                              VisibilityTimeout=math.ceil(retry_after))

    def depth(self) -> int:
        return queue_depth(self.client, self.queue_url)

    def dead_letters(self) -> list[DeadTask]:
        return []  # SQS's dead-letter queue: `pacs dlq`-style tools read it

    def redrive(self) -> int:
        return 0

    def close(self) -> None:
        pass


def task_queue(settings: Settings) -> SqliteTaskQueue | SqsTaskQueue:
    """The backend's task queue: on AWS the anonymizer's SQS queue (PACS_ANONYMIZER_QUEUE_URL), embedded
    DATA_DIR/tasks.db."""
    if settings.backend == "aws":
        if not settings.anonymizer_queue_url:
            raise ValueError("export jobs on the aws backend need PACS_ANONYMIZER_QUEUE_URL")
        return SqsTaskQueue(settings.anonymizer_queue_url, dlq_url=settings.anonymizer_dlq_url,
                            endpoint_url=settings.endpoint_url or None, region=settings.region)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteTaskQueue(Path(settings.data_dir) / "tasks.db", max_attempts=3, visibility_timeout=300.0)
