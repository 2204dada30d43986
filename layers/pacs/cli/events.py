"""`pacs events [--after ID] [--type T] [--follow]`: the embedded domain events, one JSON object per line.

Each line has the shape EventBridge gives a rule's target (`id`, `time`, `source`, `detail-type`,
`detail`), so a local consumer and a cloud one read the same thing; `id` is the log's cursor
(`--after` it to resume). On the aws backend the events are on the EventBridge bus instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from pacs.config import Settings
from pacs.events.embedded import EmbeddedEventLog, StoredEvent

POLL_SECONDS = 0.5


def as_json(e: StoredEvent) -> bytes:
    return orjson.dumps({
        "id": str(e.id), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.time)),
        "source": e.source, "detail-type": e.detail_type, "detail": e.detail,
    })


def cmd_events(args: argparse.Namespace) -> int:
    from pacs.cli.storage import open_storage

    backend = open_storage(args, Settings.from_env(data_dir=args.data_dir, backend=args.backend))
    try:
        log = backend.events
        if not isinstance(log, EmbeddedEventLog):
            bus = backend.settings.event_bus or "(none: PACS_EVENT_BUS is not set)"
            print(f"pacs: the aws backend's events are on the EventBridge bus {bus}: "
                  "consume them with a rule", file=sys.stderr)
            return 2
        after, types = args.after, tuple(args.type or ())
        while True:
            batch = log.read(after=after, limit=500, detail_types=types)
            for e in batch:
                sys.stdout.buffer.write(as_json(e) + b"\n")
            sys.stdout.flush()
            if batch:
                after = batch[-1].id
            elif not args.follow:
                return 0
            else:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return 0
    finally:
        backend.close()


def register(sub: Any) -> None:
    """Add `pacs events` to the `pacs` command's subparsers."""
    from pacs.cli.up import add_arguments

    p = sub.add_parser("events", help="the domain events emitted so far (embedded), as JSON lines")
    p.add_argument("--after", type=int, default=0, help="only events after this id (a consumer's cursor)")
    p.add_argument("--type", action="append", default=None,
                   help="only this detail-type (InstanceStored, StudyUpdated, InstanceDeleted, MppsUpdated)")
    p.add_argument("--follow", action="store_true", help="keep printing events as they come (Ctrl-C stops)")
    add_arguments(p)
    p.set_defaults(fn=cmd_events)
