"""The `pacs` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from pacs import __version__
from pacs.cli.storage import check_data_dir, open_storage
from pacs.config import Settings

#: The DICOM TLS options of `pacs up`.
TLS_KEYS = ("tls_cert", "tls_key", "tls_ca", "tls_port", "tls_require_client_cert")
#: The transcoder options of `pacs up`.
TRANSCODER_KEYS = ("transcode_policy", "transcode_workers")
#: The anonymizer options of `pacs up`.
ANONYMIZER_KEYS = ("deid_rules", "deid_workers", "deid_pixel_rules", "study_quiet_seconds")


def _settings(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "dimse_port", "http_port", "ae_title", "host", "gateway_workers", "backend",
            "endpoint_url", *TLS_KEYS, *TRANSCODER_KEYS, *ANONYMIZER_KEYS)
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def cmd_up(args: argparse.Namespace) -> int:
    from pacs.cli import up
    from pacs.cli.nodes import apply_config

    keys = ("data_dir", "dimse_port", "http_port", "ae_title", "host", "gateway_workers", "backend",
            "endpoint_url", *TLS_KEYS, *TRANSCODER_KEYS, *ANONYMIZER_KEYS)
    try:
        settings, nodes = apply_config(args.config, _settings(args),
                                       [k for k in keys if getattr(args, k, None) is not None])
    except ValueError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 2
    if settings.backend == "embedded":
        check_data_dir(settings.data_dir)
    return up.run(settings, nodes=nodes)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from pacs.services.reconcile import reconcile

    settings = _settings(args)
    backend = open_storage(args, settings)
    try:
        report = reconcile(backend.store, backend.catalog, settings.partition, backend.events)
    finally:
        backend.close()
    print(f"scanned {report.scanned}, indexed {report.indexed}, failed {len(report.failed)}")
    for key, reason in report.failed:
        print(f"  failed {key}: {reason}")
    return 1 if report.failed else 0


def cmd_dlq(args: argparse.Namespace) -> int:
    backend = open_storage(args, _settings(args))
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
            letters = backend.queue.dead_letters()
            for d in letters:
                print(f"{d.id}\t{d.event.kind}\t{d.event.key}\tattempts={d.attempts}\t{d.error}")
            print(f"{len(letters)} failed event{'' if len(letters) == 1 else 's'}", file=sys.stderr)
    finally:
        backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    from pacs.cli import anonymizer, events, export, mpps, nodes, scu, transcoder
    from pacs.cli.up import (
        add_anonymizer_arguments,
        add_arguments,
        add_tls_arguments,
        add_transcoder_arguments,
    )

    parser = argparse.ArgumentParser(prog="pacs", description="A serverless, cloud-native PACS.")
    parser.add_argument("--version", action="version", version=f"pacs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="run the whole PACS on this machine")
    add_arguments(p)
    add_tls_arguments(p)
    add_transcoder_arguments(p)
    add_anonymizer_arguments(p)
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
    transcoder.register(sub)
    export.register(sub)
    anonymizer.register(sub)
    from pacs.cli import convert, dump, extract, import_image, info  # the file tools

    for tool in (dump, info, convert, extract, import_image):
        tool.register(sub)
    from pacs.cli import anonymize, deid  # de-identification

    anonymize.register(sub)
    deid.register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PACS_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pydicom reports a bad value of a peer's data set both as a log record and as a UserWarning, again at
    # every read; pacs logs what it drops because of one (pacs.dicom.json_model). Both off unless debugging.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        code = int(args.fn(args))
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """The reader of stdout went away (`pacs events | head -1`): stop quietly, as Unix tools do. stdout
    is pointed at /dev/null so that the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe


if __name__ == "__main__":
    sys.exit(main())
