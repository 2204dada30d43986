"""`pacs anonymizer check RULES` (validate de-identification rules, print what they do),
`pacs anonymizer held [--partition P]` (instances held back: burned-in text no pixel rule covers) and
`pacs anonymizer dlq list|redrive` (the embedded anonymizer's dead letters; on AWS they are in the
anonymizer function's SQS DLQ, each with its `error` message attribute)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from pacs.config import Settings


def cmd_check(args: argparse.Namespace) -> int:
    from pacs.services.deid_rules import RulesError, describe, load_rules

    try:
        rules = load_rules(args.rules)
    except RulesError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 1
    for line in describe(rules):
        print(line)
    print(f"{len(rules.rules)} rule{'' if len(rules.rules) == 1 else 's'}", file=sys.stderr)
    return 0


def cmd_held(args: argparse.Namespace) -> int:
    from pacs.cli.main import _settings
    from pacs.cli.storage import open_storage

    settings = _settings(args)
    partition = args.partition or settings.partition
    backend = open_storage(args, settings)
    try:
        store = backend.exports_store
        n = 0
        for info in store.list(f"{partition}/export/rules/"):
            if "/held/" not in info.key or not info.key.endswith(".json"):
                continue
            try:
                record = orjson.loads(store.get(info.key))
            except ValueError:
                continue
            n += 1
            print(f"{record.get('rule', '')}\t{record.get('key', '')}\t{record.get('time', '')}\t"
                  f"{record.get('reason', '')}")
    finally:
        backend.close()
    print(f"{n} held back", file=sys.stderr)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from pacs.services.anonymize_worker import STATE_FILE, AnonymizerState

    settings = Settings.from_env(data_dir=args.data_dir)
    path = settings.data_dir / STATE_FILE
    if not path.is_file():
        print(f"pacs: no anonymizer state at {path.resolve()} (the anonymizer never ran there)",
              file=sys.stderr)
        return 2
    state = AnonymizerState(path)
    try:
        if args.action == "redrive":
            print(f"redriven {state.redrive()} (taken by the running anonymizer, or the next `pacs up`)")
            return 0
        letters = state.dead_letters()
        for d in letters:
            what = d.detail.get("key") or d.detail.get("studyInstanceUID", "")
            print(f"{d.event_id}\t{d.detail_type}\t{what}\tattempts={d.attempts}\t{d.error}")
        print(f"{len(letters)} failed event{'' if len(letters) == 1 else 's'}", file=sys.stderr)
    finally:
        state.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pacs.cli.up import add_arguments

    p = sub.add_parser("anonymizer", help="the event-driven anonymizer: check rules, held-back instances, "
                                          "failed events")
    asub = p.add_subparsers(dest="anonymizer_command", required=True)
    c = asub.add_parser("check", help="validate de-identification rules (TOML or JSON) and print them")
    c.add_argument("rules", help="a rules file, or JSON text")
    c.set_defaults(fn=cmd_check)
    h = asub.add_parser("held", help="list the instances held back (burned-in text no pixel rule covers)")
    add_arguments(h)
    h.add_argument("--partition", default=None, help="the source partition (PACS_PARTITION)")
    h.set_defaults(fn=cmd_held)
    d = asub.add_parser("dlq", help="list or redrive the embedded anonymizer's failed events")
    d.add_argument("action", choices=["list", "redrive"])
    d.add_argument("--data-dir", type=Path, default=None, help="embedded storage (./pacs-data)")
    d.set_defaults(fn=cmd_dlq)
