"""`pacs transcoder check POLICY` (validate a transcode policy, print its rules) and
`pacs transcoder dlq list|redrive` (the embedded transcoder's dead letters; on AWS they are in the
transcoder function's SQS DLQ, each with its `error` message attribute)."""

from __future__ import annotations

import argparse

from pacs.cli import worker_commands


def cmd_check(args: argparse.Namespace) -> int:
    from pacs.services.transcode_policy import PolicyError, describe, load_policy

    return worker_commands.check(args.policy, load_policy, PolicyError, describe)


def cmd_dlq(args: argparse.Namespace) -> int:
    from pacs.services.transcode_worker import TranscoderState

    return worker_commands.dlq(args, "transcoder", "transcoder.db", TranscoderState,
                               lambda detail: detail.get("key", ""))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("transcoder", help="the transcoder: check a policy, list or redrive failed events")
    tsub = p.add_subparsers(dest="transcoder_command", required=True)
    c = tsub.add_parser("check", help="validate a transcode policy (TOML or JSON) and print its rules")
    c.add_argument("policy", help="a policy file, or JSON text")
    c.set_defaults(fn=cmd_check)
    worker_commands.add_dlq(tsub, "transcoder", cmd_dlq)
