"""`pacs transcoder check POLICY` (validate a transcode policy, print its rules) and
`pacs transcoder dlq list|redrive` (the embedded transcoder's dead letters; on AWS they are in the
transcoder function's SQS DLQ, each with its `error` message attribute)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pacs.config import Settings


def cmd_check(args: argparse.Namespace) -> int:
    from pacs.services.transcode_policy import PolicyError, describe, load_policy

    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 1
    for line in describe(policy):
        print(line)
    print(f"{len(policy.rules)} rule{'' if len(policy.rules) == 1 else 's'}", file=sys.stderr)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from pacs.services.transcode_worker import TranscoderState

    settings = Settings.from_env(data_dir=args.data_dir)
    path = settings.data_dir / "transcoder.db"
    if not path.is_file():
        print(f"pacs: no transcoder state at {path.resolve()} (the transcoder never ran there)",
              file=sys.stderr)
        return 2
    state = TranscoderState(path)
    try:
        if args.action == "redrive":
            print(f"redriven {state.redrive()} (taken by the running transcoder, or the next `pacs up`)")
            return 0
        letters = state.dead_letters()
        for d in letters:
            key = d.detail.get("key", "")
            print(f"{d.event_id}\t{d.detail_type}\t{key}\tattempts={d.attempts}\t{d.error}")
        print(f"{len(letters)} failed event{'' if len(letters) == 1 else 's'}", file=sys.stderr)
    finally:
        state.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("transcoder", help="the transcoder: check a policy, list or redrive failed events")
    tsub = p.add_subparsers(dest="transcoder_command", required=True)
    c = tsub.add_parser("check", help="validate a transcode policy (TOML or JSON) and print its rules")
    c.add_argument("policy", help="a policy file, or JSON text")
    c.set_defaults(fn=cmd_check)
    d = tsub.add_parser("dlq", help="list or redrive the embedded transcoder's failed events")
    d.add_argument("action", choices=["list", "redrive"])
    d.add_argument("--data-dir", type=Path, default=None, help="embedded storage (./pacs-data)")
    d.set_defaults(fn=cmd_dlq)
