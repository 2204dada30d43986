"""`pacs anonymizer check RULES` (validate de-identification rules, print what they do),
`pacs anonymizer held [--partition P]` (instances held back: burned-in text no pixel rule covers) and
`pacs anonymizer dlq list|redrive` (the embedded anonymizer's dead letters; on AWS they are in the
anonymizer function's SQS DLQ, each with its `error` message attribute)."""

from __future__ import annotations

import argparse
import sys

import orjson

from pacs.cli import worker_commands


def cmd_check(args: argparse.Namespace) -> int:
    from pacs.services.deid_rules import RulesError, describe, load_rules

    return worker_commands.check(args.rules, load_rules, RulesError, describe)


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

    return worker_commands.dlq(args, "anonymizer", STATE_FILE, AnonymizerState,
                               lambda detail: detail.get("key") or detail.get("studyInstanceUID", ""))


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
    worker_commands.add_dlq(asub, "anonymizer", cmd_dlq)
