"""The event model: one shape for S3 notifications (via SQS) and for the embedded queue.

An `ObjectEvent` says that an object was created or removed in the object store. The indexer
consumes it; it carries what the S3 record carries (key, size, ETag, version, sequencer) so that
indexing can be idempotent and order-tolerant. The room for metering (usage entries) and for
domain events (InstanceStored, StudyUpdated) is in `DomainEvent`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

import orjson

ObjectEventKind = Literal["created", "removed"]


def sequencer_now() -> str:
    """A sortable sequencer for events produced locally (hex nanoseconds, fixed width)."""
    return f"{time.time_ns():020X}"


def event_time_now() -> str:
    """Now as S3 writes an event's time: ISO 8601 UTC with milliseconds."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def event_timestamp(value: str) -> float | None:
    """Unix time of an event's time (`2026-01-02T03:04:05.678Z`, or without the fraction), or None."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def sequencer_order(sequencer: str | None) -> int:
    """S3 sequencers are hex strings compared after left-padding; missing sorts first."""
    if not sequencer:
        return -1
    return int(sequencer, 16)


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    kind: ObjectEventKind
    key: str
    size: int = 0
    etag: str = ""
    version_id: str | None = None
    sequencer: str | None = None
    bucket: str | None = None
    #: When the object was written (the indexer's lag is measured from it).
    event_time: str = field(default_factory=event_time_now)

    @property
    def id(self) -> str:
        """A stable identity for de-duplication: the same delivery twice has the same id."""
        return f"{self.kind}:{self.key}:{self.etag}:{self.version_id or ''}:{self.sequencer or ''}"

    def to_json(self) -> bytes:
        return orjson.dumps({  # asdict() without its deep copies: every field is a plain value
            "kind": self.kind, "key": self.key, "size": self.size, "etag": self.etag,
            "version_id": self.version_id, "sequencer": self.sequencer, "bucket": self.bucket,
            "event_time": self.event_time,
        })

    @classmethod
    def from_json(cls, data: bytes | str) -> ObjectEvent:
        return cls(**orjson.loads(data))

    @classmethod
    def from_s3_record(cls, record: dict[str, Any]) -> ObjectEvent | None:
        """From one S3 notification record (real S3 or moto); None for s3:TestEvent and others.

        Keys arrive URL-encoded (`quote_plus`; moto also encodes '/'), so they are decoded here.
        """
        name = str(record.get("eventName", ""))
        if name.startswith("ObjectCreated"):
            kind: ObjectEventKind = "created"
        elif name.startswith("ObjectRemoved"):
            kind = "removed"
        else:
            return None
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        return cls(
            kind=kind,
            key=unquote_plus(str(obj.get("key", ""))),
            size=int(obj.get("size") or 0),
            etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
            version_id=obj.get("versionId"),
            sequencer=obj.get("sequencer"),
            bucket=(s3.get("bucket") or {}).get("name"),
            event_time=str(record.get("eventTime", "")),
        )

    @classmethod
    def from_s3_notification(cls, body: dict[str, Any]) -> list[ObjectEvent]:
        """All object events of an S3 notification body (`{"Records": [...]}`), test events dropped."""
        events = [cls.from_s3_record(r) for r in body.get("Records", [])]
        return [e for e in events if e is not None]
