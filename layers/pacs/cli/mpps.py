"""`pacs mpps list [--status S]` (MPPS steps received) and `pacs commitment list [--delivery D]`
(storage commitment requests, their results and how the reply went)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pacs.catalog.records import first_value
from pacs.config import Settings
from pacs.services.commitment import NEW_ASSOCIATION, PENDING, SAME_ASSOCIATION, UNDELIVERED
from pacs.services.mpps import STATES

PATIENT_ID, PATIENT_NAME, MODALITY = "00100020", "00100010", "00080060"
PPS_ID, STATION_AE = "00400253", "00400241"


def _backend(args: argparse.Namespace) -> Any:
    from pacs.cli.storage import open_storage

    backend = open_storage(args, Settings.from_env(data_dir=args.data_dir, backend=args.backend))
    if backend.mpps is None or backend.commitments is None:
        backend.close()
        raise SystemExit("pacs: this backend keeps no MPPS or commitment records")
    return backend


def cmd_mpps_list(args: argparse.Namespace) -> int:
    backend = _backend(args)
    try:
        records = backend.mpps.list_mpps(backend.settings.partition, args.status)
    finally:
        backend.close()
    for r in records:
        a = r.attrs
        print("\t".join([
            r.sop_uid, r.status, r.created, r.updated, first_value(a, PPS_ID) or "-",
            first_value(a, MODALITY) or "-", first_value(a, STATION_AE) or "-",
            first_value(a, PATIENT_ID) or "-", first_value(a, PATIENT_NAME) or "-",
            ",".join(r.study_uids) or "-",
        ]))
    print(f"{len(records)} MPPS", file=sys.stderr)
    return 0


def cmd_commitment_list(args: argparse.Namespace) -> int:
    backend = _backend(args)
    try:
        records = backend.commitments.list_commitments(backend.settings.partition, args.delivery)
    finally:
        backend.close()
    for r in records:
        failed = ",".join(f"{f.sop_instance_uid}:0x{f.reason:04X}" for f in r.failed) or "-"
        print(f"{r.transaction_uid}\t{r.requester}\t{r.created}\t{r.delivery}\t"
              f"requested={len(r.requested)}\tcommitted={len(r.committed)}\tfailed={failed}\t{r.note or '-'}")
    print(f"{len(records)} storage commitment requests", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add `pacs mpps …` and `pacs commitment …` to the `pacs` command's subparsers."""
    from pacs.cli.up import add_arguments

    p = sub.add_parser("mpps", help="Modality Performed Procedure Steps received (N-CREATE / N-SET)")
    actions = p.add_subparsers(dest="mpps_action", required=True)
    a = actions.add_parser("list", help="list the steps, oldest first: UID, status, created, updated, "
                           "step ID, modality, station AE, patient ID, patient name, study UIDs")
    a.add_argument("--status", choices=STATES, default=None, help="only the steps in this state")
    add_arguments(a)
    a.set_defaults(fn=cmd_mpps_list)

    p = sub.add_parser("commitment", help="storage commitment requests (N-ACTION) and their results")
    actions = p.add_subparsers(dest="commitment_action", required=True)
    a = actions.add_parser("list", help="list the requests, oldest first")
    a.add_argument("--delivery", choices=[PENDING, SAME_ASSOCIATION, NEW_ASSOCIATION, UNDELIVERED],
                   default=None, help="only the requests whose reply went this way")
    add_arguments(a)
    a.set_defaults(fn=cmd_commitment_list)
