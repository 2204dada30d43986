"""`pacs nodes add|list|remove` and the TOML file of `pacs up --config FILE`.

The file (every table optional):

    [pacs]                    # Settings fields (see pacs.config), under PACS_* variables and flags
    ae_title = "PACS"
    gateway_workers = 2

    [[nodes]]                 # remote nodes, put into the registry at start-up
    ae_title = "STORESCP"
    host = "127.0.0.1"
    port = 11113
    tls = false               # default false
    operations = ["store", "find", "move", "get"]   # default: all
    description = "archive"
    preferred_syntax = "jpeg-ls-lossless"   # optional: a name or UID; sent in it when accepted
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pacs.catalog.nodes import OPERATIONS, RemoteNode, check_node, resolve_syntax
from pacs.cli.storage import describe
from pacs.config import Settings


def parse_operations(text: str) -> frozenset[str]:
    ops = frozenset(o.strip().lower() for o in text.split(",") if o.strip())
    unknown = ops - OPERATIONS
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown operations {', '.join(sorted(unknown))}: use {','.join(sorted(OPERATIONS))}")
    return ops


def parse_syntax(text: str) -> str:
    """`--preferred-syntax`: a transfer syntax name or UID a codec here can encode ('' or none: none)."""
    if text.strip().lower() in ("", "none"):
        return ""
    try:
        return resolve_syntax(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_from_table(table: dict[str, Any]) -> RemoteNode:
    """A node from one `[[nodes]]` table; ValueError naming the bad or unknown key."""
    known = {"ae_title", "host", "port", "tls", "operations", "description", "preferred_syntax"}
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (use {', '.join(sorted(known))})")
    missing = {"ae_title", "host", "port"} - set(table)
    if missing:
        raise ValueError(f"missing {', '.join(sorted(missing))}")
    ops = table.get("operations", sorted(OPERATIONS))
    if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
        raise ValueError("operations must be a list of strings")
    if not isinstance(table["port"], int) or not isinstance(table.get("tls", False), bool):
        raise ValueError("port must be an integer and tls a boolean")
    preferred = table.get("preferred_syntax", "")
    if not isinstance(preferred, str):
        raise ValueError("preferred_syntax must be a string (a transfer syntax name or UID)")
    return check_node(RemoteNode(
        str(table["ae_title"]), str(table["host"]), table["port"], table.get("tls", False),
        frozenset(o.lower() for o in ops), str(table.get("description", "")),
        resolve_syntax(preferred) if preferred else "",
    ))


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigFile:
    settings: dict[str, Any]
    nodes: list[RemoteNode]


def read_config(path: Path) -> ConfigFile:
    """Parse and check the whole file before anything starts; ValueError with the place of an error."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = set(doc) - {"pacs", "nodes"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)} (use [pacs] and [[nodes]])")
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    settings: dict[str, Any] = {}
    for key, value in doc.get("pacs", {}).items():
        f = fields.get(key)
        if f is None:
            raise ValueError(f"{path}: [pacs] {key}: not a setting (see pacs.config.Settings)")
        if f.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{path}: [pacs] {key} must be an integer")
        settings[key] = Path(value) if f.type in ("Path", Path) else value if f.type in ("int", int) \
            else str(value)
    nodes = []
    for n, table in enumerate(doc.get("nodes", [])):
        try:
            nodes.append(node_from_table(table))
        except ValueError as exc:
            raise ValueError(f"{path}: [[nodes]] #{n + 1}: {exc}") from None
    return ConfigFile(settings, nodes)


def apply_config(
    path: Path | None, settings: Settings, explicit: Iterable[str], environ: dict[str, str] | None = None
) -> tuple[Settings, list[RemoteNode]]:
    """`settings` with the file's [pacs] values where neither a flag (`explicit`) nor a PACS_* variable
    set them, and the file's nodes."""
    if path is None:
        return settings, []
    cfg = read_config(path)
    env = os.environ if environ is None else environ
    keep = set(explicit) | {k for k in cfg.settings if f"PACS_{k.upper()}" in env}
    values = {k: v for k, v in cfg.settings.items() if k not in keep}
    return dataclasses.replace(settings, **values), cfg.nodes


# -- the commands ------------------------------------------------------------------------------------


def _registry(args: argparse.Namespace, *, create: bool = False) -> Any:
    from pacs.cli.storage import open_storage

    settings = Settings.from_env(data_dir=args.data_dir, backend=args.backend)
    backend = open_storage(args, settings, create=create)
    if backend.nodes is None:
        backend.close()
        raise SystemExit("pacs: this backend keeps no node registry")
    return backend


def cmd_add(args: argparse.Namespace) -> int:
    node = RemoteNode(args.ae, args.host, args.port, args.tls, args.operations, args.description,
                      args.preferred_syntax)
    try:
        check_node(node)
    except ValueError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 2
    backend = _registry(args, create=True)
    try:
        backend.nodes.put_node(node)
    finally:
        backend.close()
    prefers = f" (preferred syntax {_syntax_name(node.preferred_syntax)})" if node.preferred_syntax else ""
    print(f"added {node.ae_title} {node.host}:{node.port}{prefers} to the node registry in "
          f"{describe(backend.settings)}")
    return 0


def _syntax_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).keyword or uid if uid else ""


def cmd_list(args: argparse.Namespace) -> int:
    backend = _registry(args)
    try:
        nodes = backend.nodes.list_nodes()
    finally:
        backend.close()
    for n in nodes:
        print(f"{n.ae_title}\t{n.host}:{n.port}\t{'tls' if n.tls else 'tcp'}\t"
              f"{','.join(sorted(n.operations)) or '-'}\t{n.description}"
              + (f"\t{_syntax_name(n.preferred_syntax)}" if n.preferred_syntax else ""))
    print(f"{len(nodes)} node{'' if len(nodes) == 1 else 's'} in {describe(backend.settings)}",
          file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    backend = _registry(args)
    try:
        removed = backend.nodes.remove_node(args.ae)
    finally:
        backend.close()
    if not removed:
        print(f"pacs: no node {args.ae!r} in {describe(backend.settings)}", file=sys.stderr)
        return 1
    print(f"removed {args.ae} from the node registry in {describe(backend.settings)}")
    return 0


def register(sub: Any) -> None:
    """Add `pacs nodes …` to the `pacs` command's subparsers."""
    from pacs.cli.up import add_arguments

    p = sub.add_parser("nodes", help="the remote DICOM nodes this PACS knows")
    actions = p.add_subparsers(dest="nodes_action", required=True)
    a = actions.add_parser("add", help="add or replace a node")
    a.add_argument("ae", help="its AE title")
    a.add_argument("host")
    a.add_argument("port", type=int)
    a.add_argument("--tls", action="store_true", help="it speaks DICOM TLS")
    a.add_argument("--operations", type=parse_operations, default=OPERATIONS,
                   help="what it may ask of this PACS, comma-separated (default: store,find,move,get)")
    a.add_argument("--description", default="")
    a.add_argument("--preferred-syntax", type=parse_syntax, default="", metavar="NAME|UID",
                   help="send instances to it in this transfer syntax when it accepts it (transcoded if "
                        "stored otherwise), e.g. jpeg-ls-lossless, JPEGLSLossless or its UID")
    add_arguments(a)
    a.set_defaults(fn=cmd_add)
    a = actions.add_parser("list", help="list the nodes")
    add_arguments(a)
    a.set_defaults(fn=cmd_list)
    a = actions.add_parser("remove", help="remove a node")
    a.add_argument("ae")
    add_arguments(a)
    a.set_defaults(fn=cmd_remove)
