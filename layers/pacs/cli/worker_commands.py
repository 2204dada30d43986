"""What `pacs transcoder` and `pacs anonymizer` share: `check` (validate rules, print them) and
`dlq list|redrive` (an embedded event worker's dead letters)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pacs.config import Settings

if TYPE_CHECKING:
    from pacs.services.event_worker import WorkerState


class _Rules(Protocol):
    @property
    def rules(self) -> Sequence[Any]: ...


R = TypeVar("R", bound=_Rules)


def check(source: str, load: Callable[[str], R], error: type[Exception],
          describe: Callable[[R], Iterable[str]]) -> int:
    """Print what `describe` says of the rules `load` reads (their count on stderr); 1 on `error`."""
    try:
        loaded = load(source)
    except error as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 1
    for line in describe(loaded):
        print(line)
    print(f"{len(loaded.rules)} rule{'' if len(loaded.rules) == 1 else 's'}", file=sys.stderr)
    return 0


def dlq(args: argparse.Namespace, name: str, state_file: str, open_state: Callable[[Path], WorkerState],
        what: Callable[[Mapping[str, Any]], Any]) -> int:
    """List (one line each: `what` names the event's subject) or redrive the dead letters of the
    embedded worker `name`, whose state is `state_file` in the data directory."""
    settings = Settings.from_env(data_dir=args.data_dir)
    path = settings.data_dir / state_file
    if not path.is_file():
        print(f"pacs: no {name} state at {path.resolve()} (the {name} never ran there)", file=sys.stderr)
        return 2
    state = open_state(path)
    try:
        if args.action == "redrive":
            print(f"redriven {state.redrive()} (taken by the running {name}, or the next `pacs up`)")
            return 0
        letters = state.dead_letters()
        for d in letters:
            print(f"{d.event_id}\t{d.detail_type}\t{what(d.detail)}\tattempts={d.attempts}\t{d.error}")
        print(f"{len(letters)} failed event{'' if len(letters) == 1 else 's'}", file=sys.stderr)
    finally:
        state.close()
    return 0


def add_dlq(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
            fn: Callable[[argparse.Namespace], int]) -> None:
    """The `dlq list|redrive [--data-dir]` subcommand of the worker `name`."""
    d = sub.add_parser("dlq", help=f"list or redrive the embedded {name}'s failed events")
    d.add_argument("action", choices=["list", "redrive"])
    d.add_argument("--data-dir", type=Path, default=None, help="embedded storage (./pacs-data)")
    d.set_defaults(fn=fn)
