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
