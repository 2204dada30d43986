"""The `pacs` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pacs.config import Settings

#: The DICOM TLS options of `pacs up`.
TLS_KEYS = ("tls_cert", "tls_key", "tls_ca", "tls_port", "tls_require_client_cert")


def _settings(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "dimse_port", "http_port", "ae_title", "host", "gateway_workers", "backend",
            "endpoint_url", *TLS_KEYS)
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def cmd_up(args: argparse.Namespace) -> int:
    from pacs.cli import up
    from pacs.cli.nodes import apply_config

    keys = ("data_dir", "dimse_port", "http_port", "ae_title", "host", "gateway_workers", "backend",
            "endpoint_url", *TLS_KEYS)
    try:
        settings, nodes = apply_config(args.config, _settings(args),
                                       [k for k in keys if getattr(args, k, None) is not None])
    except ValueError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 2
    return up.run(settings, nodes=nodes)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from pacs.backends import open_backend
    from pacs.services.reconcile import reconcile

    settings = _settings(args)
    backend = open_backend(settings)
    try:
        report = reconcile(backend.store, backend.catalog, settings.partition, backend.events)
    finally:
        backend.close()
    print(f"scanned {report.scanned}, indexed {report.indexed}, failed {len(report.failed)}")
    for key, reason in report.failed:
        print(f"  failed {key}: {reason}")
    return 1 if report.failed else 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from pacs.backends import open_backend

    backend = open_backend(_settings(args))
    try:
        if backend.queue is None:
            print("pacs: the aws backend needs PACS_QUEUE_URL and PACS_DLQ_URL (the index queue and its "
                  "dead-letter queue)", file=sys.stderr)
            return 2
        if backend.settings.backend == "aws" and not backend.settings.dlq_url:
            print("pacs: set PACS_DLQ_URL (the index queue's dead-letter queue)", file=sys.stderr)
            return 2
        if args.action == "redrive":
            print(f"redriven {backend.queue.redrive()}")
        else:
            for d in backend.queue.dead_letters():
                print(f"{d.id}\t{d.event.kind}\t{d.event.key}\tattempts={d.attempts}\t{d.error}")
    finally:
        backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    from pacs.cli import events, mpps, nodes, scu
    from pacs.cli.up import add_arguments, add_tls_arguments

    parser = argparse.ArgumentParser(prog="pacs", description="A serverless, cloud-native PACS.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="run the whole PACS on this machine")
    add_arguments(p)
    add_tls_arguments(p)
    p.add_argument("--config", type=Path, default=None,
                   help="a TOML file: [pacs] settings and [[nodes]] loaded into the registry (README)")
    p.set_defaults(fn=cmd_up)
    p = sub.add_parser("reconcile", help="index stored instances missing from the catalog")
    add_arguments(p)
    p.set_defaults(fn=cmd_reconcile)
    p = sub.add_parser("dlq", help="list or redrive failed index events")
    p.add_argument("action", choices=["list", "redrive"])
    add_arguments(p)
    p.set_defaults(fn=cmd_dlq)
    nodes.register(sub)
    scu.register(sub)
    mpps.register(sub)
    events.register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PACS_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
