"""The index queue on SQS: the queue S3 notifies, consumed as the embedded `LocalQueue` is.

`pacs up --backend aws` runs the same indexer worker on it (`index_worker`), so the local process
tree indexes from SQS as the Lambda does. Each S3 record of a message becomes one `QueueMessage`;
the SQS message is deleted once all its records are acknowledged. A failed record makes the whole
message visible again after `retry_after` (indexing is idempotent); SQS's redrive policy moves it to
the dead-letter queue after `maxReceiveCount` receives. `dead_letters` and `redrive` work on that
DLQ (receive, send to the source queue, delete: moto has no `StartMessageMoveTask`, and this works
against both).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from typing import Any

import boto3
import orjson
from botocore.config import Config

from pacs.events.local import DeadLetter, QueueMessage
from pacs.events.model import ObjectEvent

log = logging.getLogger("pacs.queue")

#: How long `dead_letters` hides the messages it looks at (they are made visible again at once).
_PEEK_SECONDS = 30


def queue_depth(client: Any, queue_url: str) -> int:
    """Messages in an SQS queue, visible or in flight (approximate, as SQS counts)."""
    attrs = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def parse_body(body: str | bytes) -> list[ObjectEvent] | None:
    """The object events of an SQS message body: an S3 notification, or one wrapped by SNS; [] for
    S3's test event; None when the body is no notification at all."""
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
            doc = orjson.loads(doc["Message"])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(doc.get("Records"), list):
        return None
    return ObjectEvent.from_s3_notification(doc)


class SqsQueue:
    def __init__(
        self,
        queue_url: str,
        *,
        dlq_url: str = "",
        client: Any | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        visibility_timeout: int = 60,
    ) -> None:
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.visibility_timeout = visibility_timeout
        self.client = client or boto3.client(
            "sqs", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, tcp_keepalive=True),
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        #: message id → receipt handle; receipt handle → (ids not yet settled, retry delay of a failure).
        self._receipts: dict[int, str] = {}
        self._open: dict[str, tuple[set[int], float | None]] = {}

    def receive(self, max_messages: int = 10, wait: float = 0.0) -> list[QueueMessage]:
        """Up to about `max_messages` object events, long-polling up to `wait` seconds (whole seconds,
        at most 20) for the first."""
        out: list[QueueMessage] = []
        wait_seconds = min(20, math.ceil(wait)) if wait > 0 else 0
        while len(out) < max_messages:
            got = self.client.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, max_messages - len(out)),
                WaitTimeSeconds=wait_seconds, VisibilityTimeout=self.visibility_timeout,
                AttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            if not got:
                break
            wait_seconds = 0
            for m in got:
                out += self._take(m)
        return out

    def _take(self, m: dict[str, Any]) -> list[QueueMessage]:
        events = parse_body(m["Body"])
        receipt = m["ReceiptHandle"]
        if events is None:  # left alone: redelivered, then dead-lettered by the redrive policy
            log.warning("SQS message %s is not an S3 notification; left to the dead-letter queue",
                        m.get("MessageId"))
            return []
        if not events:  # s3:TestEvent, or only records that are no object events
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
            return []
        attempts = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        taken = [QueueMessage(next(self._ids), e, attempts) for e in events]
        with self._lock:
            self._open[receipt] = ({q.id for q in taken}, None)
            for q in taken:
                self._receipts[q.id] = receipt
        return taken

    def _settle(self, message_id: int, retry_after: float | None) -> tuple[str, float | None] | None:
        """Mark one message settled (failed when `retry_after` is given); returns the receipt and the
        retry delay of a failure (None: all succeeded) once its SQS message is all settled."""
        with self._lock:
            receipt = self._receipts.pop(message_id, None)
            if receipt is None:
                return None
            ids, retry = self._open[receipt]
            ids.discard(message_id)
            if retry_after is not None:
                retry = retry_after if retry is None else min(retry, retry_after)
            if ids:
                self._open[receipt] = (ids, retry)
                return None
            del self._open[receipt]
            return receipt, retry

    def _retry(self, receipt: str, after: float) -> None:
        """Visible again after `after` seconds; its receive count moves it to the DLQ in the end."""
        self.client.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=math.ceil(after))

    def ack(self, *message_ids: int) -> None:
        done = []
        for i in message_ids:
            settled = self._settle(i, None)
            if settled is None:
                continue
            receipt, retry = settled
            if retry is None:
                done.append(receipt)
            else:  # another record of the same message failed
                self._retry(receipt, retry)
        for start in range(0, len(done), 10):
            entries = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(done[start:start + 10])]
            resp = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for f in resp.get("Failed", []):  # redelivered later: indexing is idempotent
                log.warning("SQS delete failed: %s", f)

    def fail(self, message: QueueMessage, error: str, *, retry_after: float = 1.0) -> None:
        settled = self._settle(message.id, retry_after)
        if settled is not None and settled[1] is not None:
            self._retry(settled[0], settled[1])

    def depth(self) -> int:
        return queue_depth(self.client, self.queue_url)

    def dead_letter_depth(self) -> int:
        """Messages in the dead-letter queue (0 without one)."""
        if not self.dlq_url:
            return 0
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"])

    def oldest_age(self) -> float | None:
        """Not known from the queue's attributes (CloudWatch has ApproximateAgeOfOldestMessage)."""
        return None

    def _dlq(self) -> str:
        if not self.dlq_url:
            raise ValueError("no dead-letter queue: set PACS_DLQ_URL")
        return self.dlq_url

    def _drain(self, queue_url: str, visibility: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if out else 1,
                VisibilityTimeout=visibility, AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            ).get("Messages", [])
            if not got:
                return out
            out += got

    def dead_letters(self) -> list[DeadLetter]:
        """Every object event in the DLQ (its messages stay there)."""
        dlq = self._dlq()
        messages = self._drain(dlq, _PEEK_SECONDS)
        out: list[DeadLetter] = []
        for n, m in enumerate(messages, start=1):
            attempts = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "0"))
            events = parse_body(m["Body"])
            if events is None:
                log.warning("dead letter %s is not an S3 notification", m.get("MessageId"))
            out += [DeadLetter(n, e, attempts, None) for e in events or []]
        for start in range(0, len(messages), 10):  # visible again for the next look or a redrive
            self.client.change_message_visibility_batch(QueueUrl=dlq, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages[start:start + 10])])
        return out

    def redrive(self) -> int:
        """Move every DLQ message back to the index queue; returns how many."""
        dlq = self._dlq()
        moved = 0
        while batch := self._drain_batch(dlq):
            sent = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(batch)])
            ok = {int(s["Id"]) for s in sent.get("Successful", [])}
            for f in sent.get("Failed", []):
                log.warning("redrive of a dead letter failed (it stays in the DLQ): %s", f)
            done = [m for i, m in enumerate(batch) if i in ok]
            if done:
                self.client.delete_message_batch(QueueUrl=dlq, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
            moved += len(done)
            if len(done) < len(batch):
                break  # what failed stays hidden for a while: stop rather than loop on it
        return moved

    def _drain_batch(self, queue_url: str) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = self.client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=_PEEK_SECONDS,
        ).get("Messages", [])
        return got

    def close(self) -> None:
        self.client.close()
