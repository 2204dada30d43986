"""`pacs echo|store|find|move|get`: the SCU commands, against any remote node (`AE@HOST:PORT`, or an
AE title of the node registry), with dcmtk's flags where they exist: `-aet` (our calling AE), `-aec`
(called AE), `-k gggg,eeee=value` / `-k Keyword=value`, `-P`/`-S` (patient/study root), `-aem`
(move destination), `-od` (get output directory), `+sd`/`+r` (scan directories, recurse), `+tls KEY
CERT`, `+cf CA`.

Exit status: 0 when every operation succeeded, 1 when one failed (or ended in a warning), 2 when
the request could not be made (bad arguments, no association).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)  # status lines are never wrapped
err = Console(stderr=True, highlight=False, soft_wrap=True)

SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", help="AE@HOST:PORT, HOST:PORT (with -aec) or an AE title of `pacs nodes list`")
    p.add_argument("-aet", "--aetitle", dest="calling_ae", default=None,
                   help="our calling AE title (default: the PACS's, PACS_AE_TITLE)")
    p.add_argument("-aec", "--call", dest="called_ae", default=None, help="the called AE title")
    p.add_argument("-to", "--timeout", dest="timeout", type=float, default=60.0,
                   help="seconds for connection, ACSE, DIMSE and network waits (60)")
    p.add_argument("-pdu", "--max-pdu", dest="max_pdu", type=int, default=1 << 20,
                   help="largest PDU we receive (1 MiB)")
    p.add_argument("--tls", action="store_true", help="DICOM TLS (BCP 195 non-downgrading)")
    p.add_argument("+tls", "--enable-tls", dest="tls_key_cert", nargs=2, metavar=("KEY", "CERT"),
                   default=None, help="DICOM TLS with this client key and certificate (PEM)")
    p.add_argument("+cf", "--add-cert-file", dest="tls_ca", default=None,
                   help="CA certificate that signs the server's (TLS)")
    p.add_argument("-ic", "--ignore-peer-cert", dest="tls_no_verify", action="store_true",
                   help="do not verify the server certificate (TLS)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="embedded storage holding the node registry (PACS_DATA_DIR, ./pacs-data)")


def _query(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group()
    model.add_argument("-S", "--study", dest="model", action="store_const", const="study",
                       help="Study Root information model (default)")
    model.add_argument("-P", "--patient", dest="model", action="store_const", const="patient",
                       help="Patient Root information model")
    p.add_argument("-L", "--level", default=None, help="PATIENT, STUDY, SERIES or IMAGE")
    p.add_argument("-k", "--key", dest="keys", action="append", default=[],
                   help="gggg,eeee=value or Keyword=value (no value: a return key)")


def register(sub: Any) -> None:
    """Add the SCU commands to the `pacs` sub-commands."""
    p = sub.add_parser("echo", prefix_chars="-+", help="C-ECHO a remote node")
    _common(p)
    p.set_defaults(fn=cmd_echo)

    p = sub.add_parser("store", prefix_chars="-+", help="C-STORE files or directories to a remote node")
    _common(p)
    p.add_argument("paths", nargs="+", type=Path, help="DICOM files or directories")
    p.add_argument("+sd", "--scan-directories", dest="scan", action="store_true",
                   help="take the files of directories given (implied by --recursive)")
    p.add_argument("-r", "+r", "--recursive", "--recurse", dest="recursive", action="store_true",
                   help="take the files of directories and their sub-directories")
    p.add_argument("--preferred-syntax", type=_syntax, default=None, metavar="NAME|UID",
                   help="send in this transfer syntax when the node accepts it (transcoded if stored "
                        "otherwise; default: the registered node's preference, else each file as it is)")
    p.set_defaults(fn=cmd_store)

    p = sub.add_parser("find", prefix_chars="-+", help="C-FIND a remote node")
    _common(p)
    _query(p)
    p.add_argument("--json", action="store_true", help="print the matches as a DICOM JSON array")
    p.set_defaults(fn=cmd_find)

    p = sub.add_parser("move", prefix_chars="-+", help="C-MOVE from a remote node to a destination AE")
    _common(p)
    _query(p)
    p.add_argument("-aem", "--move", dest="destination", default=None,
                   help="the move destination AE title (default: our calling AE)")
    p.set_defaults(fn=cmd_move)

    p = sub.add_parser("get", prefix_chars="-+", help="C-GET from a remote node into a directory")
    _common(p)
    _query(p)
    p.add_argument("-od", "--output-directory", dest="out_dir", type=Path, default=Path("."),
                   help="where the received instances are written (.)")
    p.set_defaults(fn=cmd_get)


# -- shared ------------------------------------------------------------------------------------------------

def _setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(node, ScuOptions) from the arguments; the registry is opened only for a bare AE title."""
    from pacs.config import Settings
    from pacs.dimse.scu import ScuOptions, resolve_node
    from pacs.dimse.tls import client_context

    settings = Settings.from_env(data_dir=args.data_dir)
    registry = None
    backend = None
    if "@" not in args.node and ":" not in args.node:
        from pacs.cli.storage import open_storage

        backend = open_storage(args, settings)
        registry = backend.nodes
    try:
        node = resolve_node(args.node, registry, called_ae=args.called_ae)
    finally:
        if backend is not None:
            backend.close()
    tls = None
    if args.tls or args.tls_key_cert or args.tls_ca or node.tls:
        key, cert = args.tls_key_cert or (None, None)
        tls = client_context(args.tls_ca, cert, key, verify=not args.tls_no_verify)
    options = ScuOptions(calling_ae=args.calling_ae or settings.ae_title, tls=tls, max_pdu=args.max_pdu,
                         max_send_pdu=settings.max_send_pdu, timeout=args.timeout)
    return node, options


def _status_text(code: int, rsp: Any = None) -> str:
    """`0xA900 Failure`, and the reason the peer gave when its response carries one."""
    from pynetdicom.status import code_to_category

    text = f"0x{code:04X} {code_to_category(code)}"
    reason = _reason(rsp)
    return f"{text}: {reason}" if reason else text


def _reason(rsp: Any) -> str:
    """The Error Comment (and Offending Element) of a DIMSE response, '' when it has none."""
    if rsp is None:
        return ""
    parts = []
    comment = rsp.get("ErrorComment")
    if comment:
        parts.append(str(comment).strip())
    offending = rsp.get("OffendingElement")
    if offending:
        tags = [offending] if isinstance(offending, int) else list(offending)
        parts.append("offending element " + ", ".join(f"({int(t) >> 16:04X},{int(t) & 0xFFFF:04X})"
                                                      for t in tags))
    return "; ".join(parts)


def _uids(value: Any) -> list[str]:
    """A UID list element's values (one UID, or several)."""
    if not value:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _run(fn: Any, args: argparse.Namespace) -> int:
    from pacs.dimse.scu import ScuError
    from pacs.dimse.sender import SendError

    try:
        return int(fn(args))
    except (ScuError, SendError) as exc:
        err.print(f"pacs {args.command}: {exc}")
        return 2
    except BrokenPipeError:
        raise  # the reader of stdout went away: `pacs` ends quietly
    except OSError as exc:  # a certificate or key that does not load, an unreadable path
        err.print(f"pacs {args.command}: {exc}")
        return 2


# -- echo ----------------------------------------------------------------------------------------------------

def cmd_echo(args: argparse.Namespace) -> int:
    return _run(_echo, args)


def _echo(args: argparse.Namespace) -> int:
    from pacs.dimse.scu import echo

    node, options = _setup(args)
    status = echo(node, options)
    console.print(f"C-ECHO {node.ae_title}@{node.host}:{node.port}: {_status_text(status)}", markup=False)
    return 0 if status == SUCCESS else 1


# -- store ---------------------------------------------------------------------------------------------------

def files_of(paths: Iterable[Path], *, scan: bool, recursive: bool) -> Iterator[Path]:
    """The files named, and those of the directories named when scanning (recursively with
    `recursive`), in a stable order."""
    for path in paths:
        if path.is_dir():
            if not (scan or recursive):
                raise OSError(f"{path} is a directory: add +sd (scan) or --recursive")
            found = path.rglob("*") if recursive else path.glob("*")
            yield from sorted(p for p in found if p.is_file())
        else:
            yield path


def cmd_store(args: argparse.Namespace) -> int:
    return _run(_store, args)


def _syntax(text: str) -> str:
    """A transfer syntax name or UID a codec here can encode (`--preferred-syntax`)."""
    from pacs.cli.nodes import parse_syntax

    return parse_syntax(text)


def _store(args: argparse.Namespace) -> int:
    import dataclasses

    from pacs.dimse.sender import SendError, StoreSender, read_header

    node, options = _setup(args)
    if args.preferred_syntax is not None:
        node = dataclasses.replace(node, preferred_syntax=args.preferred_syntax)
    files = list(files_of(args.paths, scan=args.scan, recursive=args.recursive))
    readable: list[tuple[Path, str, tuple[str, str]]] = []  # (file, SOP Instance UID, (class, syntax))
    results: list[tuple[Path, str, int | None]] = []  # (file, what happened, status)
    refused: list[tuple[str, str]] = []  # (SOP Instance UID, status and reason) of those not stored
    for f in files:
        try:
            sop_class, sop_uid, syntax = read_header(f)
            readable.append((f, sop_uid, (sop_class, syntax)))
        except SendError as exc:
            results.append((f, str(exc), None))
            console.print(Text.assemble(("skipped", "red"), f" {f}: not DICOM Part 10"))
    if readable:
        columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with StoreSender(node, options.calling_ae, [pair for _, _, pair in readable], max_pdu=options.max_pdu,
                         timeout=options.timeout, tls=options.tls) as sender, \
                Progress(*columns, console=console, transient=True) as progress:
            _cap(sender, options.max_send_pdu)
            task = progress.add_task(f"C-STORE to {node.ae_title}", total=len(readable))
            for f, sop_uid, _ in readable:
                try:
                    status = sender.send(f)
                    text = _status_text(status, sender.response)
                    results.append((f, text, status))
                    colour = "green" if status == SUCCESS else "yellow" if status >> 12 == 0xB else "red"
                    if status != SUCCESS:
                        refused.append((sop_uid, text))
                    why = _reason(sender.response)
                    detail = "" if status == SUCCESS else f" {sop_uid}" + (f": {why}" if why else "")
                    progress.console.print(Text.assemble((_status_text(status), colour), f" {f}{detail}"))
                except SendError as exc:
                    results.append((f, str(exc), None))
                    refused.append((sop_uid, f"not sent: {exc}"))
                    progress.console.print(Text.assemble(("not sent", "red"), f" {f} {sop_uid}: {exc}"))
                progress.advance(task)
    sent = sum(1 for _, _, s in results if s == SUCCESS)
    warned = sum(1 for _, _, s in results if s is not None and s >> 12 == 0xB)
    failed = len(results) - sent - warned
    console.print(f"{len(results)} file(s): {sent} stored, {warned} with a warning, {failed} failed")
    if refused:
        console.print("SOP Instance UIDs not stored (or stored with a warning):")
        for uid, why in refused:
            console.print(f"  {uid}  {why}", markup=False)
    return 0 if failed == 0 and warned == 0 else 1


def _cap(sender: Any, limit: int) -> None:
    """What `pacs store` sends is fragmented to at most `limit` bytes per PDU (the sender's
    association is established: its peer's announced maximum is capped in place)."""
    from pacs.dimse.scu import cap_announced

    if sender.assoc is not None:
        cap_announced(sender.assoc.acceptor.user_information, limit)


# -- find, move, get ---------------------------------------------------------------------------------------

def _identifier(args: argparse.Namespace) -> Any:
    from pacs.dimse.scu import identifier

    return identifier(args.level, args.keys)


def cmd_find(args: argparse.Namespace) -> int:
    return _run(_find, args)


def _find(args: argparse.Namespace) -> int:
    from pacs.dimse.scu import describe, find

    query = _identifier(args)
    node, options = _setup(args)
    rows: list[dict[str, str]] = []
    matches: list[dict[str, Any]] = []
    final, final_rsp = None, None
    for status, ds, rsp in find(node, options, query, args.model or "study"):
        if status in PENDING and ds is not None:
            rows.append(describe(ds))
            matches.append(ds.to_json_dict())
        else:
            final, final_rsp = status, rsp
    if args.json:
        print(json.dumps(matches))
        if final != SUCCESS and final is not None:
            err.print(f"pacs find: final status {_status_text(final, final_rsp)}", markup=False)
        return 0 if final == SUCCESS else 1
    print_matches(f"C-FIND {node.ae_title}: {len(rows)} match(es)", rows)
    summary = f"final status {_status_text(final, final_rsp)}" if final is not None else "no final status"
    console.print(summary, markup=False)
    return 0 if final == SUCCESS else 1


def print_matches(title: str, rows: list[dict[str, str]]) -> None:
    """The matches as a table when it fits the terminal, else one `Keyword: value` line per attribute:
    a value (a 64-character UID) is never cut or folded."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(Text(row.get(c, "")) for c in columns))
    if Measurement.get(console, console.options.update_width(1 << 20), table).maximum <= console.width:
        console.print(table)
        return
    console.print(title, markup=False)
    for n, row in enumerate(rows, 1):
        console.print(f"match {n}", markup=False)
        for c, v in row.items():
            console.print(f"  {c}: {v}", markup=False)


def _counts(rsp: Any) -> str:
    names = ("Remaining", "Completed", "Failed", "Warning")
    parts = [f"{n.lower()} {rsp.get(f'NumberOf{n}Suboperations')}" for n in names
             if rsp.get(f"NumberOf{n}Suboperations") is not None]
    return ", ".join(parts)


def _retrieve_result(command: str, responses: Iterable[tuple[int, Any, Any]]) -> int:
    """Print each response's counts, the final status with the peer's reason, and the Failed SOP
    Instance UID List (in the final response's identifier)."""
    final = None
    for status, rsp, identifier in responses:
        if status in PENDING:
            console.print(f"{command} pending: {_counts(rsp)}")
        else:
            final = status
            console.print(f"{command} final status {_status_text(status, rsp)}: {_counts(rsp)}", markup=False)
            failed = _uids((identifier if identifier is not None else rsp).get("FailedSOPInstanceUIDList"))
            if failed:
                console.print(f"failed SOP Instance UIDs ({len(failed)}):")
                for uid in failed:
                    console.print(f"  {uid}", markup=False)
    return 0 if final == SUCCESS else 1


def cmd_move(args: argparse.Namespace) -> int:
    return _run(_move, args)


def _move(args: argparse.Namespace) -> int:
    from pacs.dimse.scu import move

    query = _identifier(args)
    node, options = _setup(args)
    destination = args.destination or options.calling_ae
    return _retrieve_result("C-MOVE", move(node, options, query, destination, args.model or "study"))


def cmd_get(args: argparse.Namespace) -> int:
    return _run(_get, args)


def _get(args: argparse.Namespace) -> int:
    from pacs.dimse.scu import Received, get

    query = _identifier(args)
    node, options = _setup(args)

    def received(r: Received) -> None:
        where = r.path if r.path is not None else "not written"
        console.print(f"{_status_text(r.status)} {r.sop_uid} -> {where}", markup=False)

    responses = get(node, options, query, args.out_dir, args.model or "study", on_instance=received)
    return _retrieve_result("C-GET", responses)
