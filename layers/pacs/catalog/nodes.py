"""Remote DICOM nodes: the registry of AE titles this PACS talks to (C-MOVE destinations, storage
commitment replies, the calling-AE allowlist, the `pacs` SCU commands).

The registry lives in the catalog: adapters beside the catalog's own (SQLite table, DynamoDB items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

#: What a node may ask of this PACS.
OPERATIONS = frozenset({"store", "find", "move", "get"})


@dataclass(frozen=True, slots=True)
class RemoteNode:
    ae_title: str
    host: str
    port: int
    tls: bool = False
    operations: frozenset[str] = field(default=OPERATIONS)
    description: str = ""
    #: The transfer syntax UID instances are sent to it in when it accepts it ("" for none: as stored).
    preferred_syntax: str = ""


class NodeRegistry(Protocol):
    def put_node(self, node: RemoteNode) -> None:
        """Add or replace the node with this AE title."""
        ...

    def get_node(self, ae_title: str) -> RemoteNode | None: ...

    def list_nodes(self) -> list[RemoteNode]:
        """Every node, by AE title."""
        ...

    def remove_node(self, ae_title: str) -> bool:
        """False when there was no such node."""
        ...


def check_node(node: RemoteNode) -> RemoteNode:
    """The node itself when valid (AE title 1-16 printable characters without backslash, not only
    spaces; a host; a TCP port; known operations); ValueError naming what is wrong otherwise."""
    ae = node.ae_title
    if not ae.strip() or len(ae) > 16 or "\\" in ae or not ae.isprintable():
        raise ValueError(f"AE title {ae!r}: 1-16 printable characters, no backslash, not only spaces")
    if not node.host or any(c.isspace() for c in node.host):
        raise ValueError(f"host {node.host!r} is not a host name or address")
    if not 0 < node.port < 65536:
        raise ValueError(f"port {node.port} is not a TCP port (1-65535)")
    unknown = set(node.operations) - OPERATIONS
    if unknown:
        raise ValueError(f"unknown operations {sorted(unknown)}: use {', '.join(sorted(OPERATIONS))}")
    if node.preferred_syntax and resolve_syntax(node.preferred_syntax) != node.preferred_syntax:
        raise ValueError(f"preferred syntax {node.preferred_syntax!r}: give its UID (resolve_syntax)")
    return node


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def resolve_syntax(text: str) -> str:
    """The UID of a transfer syntax named by its UID, its pydicom keyword (`JPEGLSLossless`) or name,
    in any case and with any separators (`jpeg-ls-lossless`); ValueError when it is unknown or no
    codec here can encode it."""
    from pydicom.uid import UID

    from pacs.codecs import SYNTAXES, can_encode, encodable

    text = text.strip()
    names: dict[str, str] = {}
    for uid in SYNTAXES:
        u = UID(uid)
        short = u.keyword.removesuffix("8Bit").removesuffix("12Bit")  # jpeg-baseline, jpeg-extended
        for name in (u.keyword, short, u.name, u.name.removesuffix(" Image Compression"), uid):
            names.setdefault(_norm(name), uid)
    found = text if text in SYNTAXES else names.get(_norm(text))
    if found is None:
        raise ValueError(f"unknown transfer syntax {text!r}: use a UID or a name such as "
                         "jpeg-ls-lossless, rle-lossless, explicit-vr-little-endian")
    if not can_encode(found):
        raise ValueError(f"{UID(found).name} ({found}) cannot be encoded here; encodable: "
                         + ", ".join(UID(s).keyword for s in encodable()))
    return found
