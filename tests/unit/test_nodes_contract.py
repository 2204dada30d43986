"""The NodeRegistry contract (`pacs.catalog.nodes`), run against both adapters: SQLite and DynamoDB (moto).

The registry shares the catalog's storage (database file, table): nodes never show up as studies and
studies never as nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pacs.catalog.nodes import OPERATIONS, NodeRegistry, RemoteNode
from pacs.catalog.port import Catalog

from tests.unit.aws import fake_aws_credentials
from tests.unit.test_catalog_contract import P, make


@dataclass
class Pair:
    nodes: NodeRegistry
    catalog: Catalog


@pytest.fixture(params=["sqlite", "dynamodb"])
def pair(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    if request.param == "sqlite":
        from pacs.catalog.nodes_sqlite import SqliteNodeRegistry
        from pacs.catalog.sqlite import SqliteCatalog

        catalog = SqliteCatalog(tmp_path / "catalog.db")
        nodes = SqliteNodeRegistry(tmp_path / "catalog.db")
        yield Pair(nodes, catalog)
        nodes.close()
        catalog.close()
        return

    import moto
    from pacs.catalog.dynamodb import DynamoCatalog
    from pacs.catalog.nodes_dynamodb import DynamoNodeRegistry

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        dynamo = DynamoCatalog("pacs-nodes-test", create=True)
        registry = DynamoNodeRegistry("pacs-nodes-test")
        yield Pair(registry, dynamo)
        registry.close()
        dynamo.close()


def test_put_get_list_remove(pair: Pair) -> None:
    reg = pair.nodes
    a = RemoteNode("MODALITY1", "10.0.0.5", 104, tls=False, operations=frozenset({"store"}),
                   description="CT room 1")
    b = RemoteNode("WS", "ws.example", 11112, tls=True)
    assert reg.get_node("MODALITY1") is None
    assert reg.list_nodes() == []
    reg.put_node(b)
    reg.put_node(a)
    assert reg.get_node("MODALITY1") == a
    assert reg.get_node("WS") == b
    assert b.operations == OPERATIONS  # every operation unless told
    assert reg.list_nodes() == [a, b]
    assert reg.remove_node("MODALITY1") is True
    assert reg.remove_node("MODALITY1") is False
    assert reg.get_node("MODALITY1") is None
    assert reg.list_nodes() == [b]


def test_put_replaces_and_titles_are_exact(pair: Pair) -> None:
    reg = pair.nodes
    reg.put_node(RemoteNode("PEER", "127.0.0.1", 104))
    new = RemoteNode("PEER", "127.0.0.2", 4242, tls=True, operations=frozenset(), description="moved")
    reg.put_node(new)
    assert reg.get_node("PEER") == new
    assert reg.get_node("peer") is None  # AE titles are case-sensitive
    assert reg.list_nodes() == [new]


@pytest.mark.parametrize("bad", [
    RemoteNode("", "h", 104), RemoteNode("   ", "h", 104), RemoteNode("A" * 17, "h", 104),
    RemoteNode("A\\B", "h", 104), RemoteNode("AE", "", 104), RemoteNode("AE", "h", 0),
    RemoteNode("AE", "h", 70000), RemoteNode("AE", "h", 104, operations=frozenset({"delete"})),
])
def test_invalid_nodes_are_refused(pair: Pair, bad: RemoteNode) -> None:
    with pytest.raises(ValueError):
        pair.nodes.put_node(bad)
    assert pair.nodes.list_nodes() == []


def test_nodes_and_studies_share_storage_without_mixing(pair: Pair) -> None:
    pair.catalog.upsert_instance(make(1))
    pair.nodes.put_node(RemoteNode("NODE", "127.0.0.1", 104))
    studies = pair.catalog.query_studies(P, ()).rows
    assert [s.study_uid for s in studies] == ["1.2.826.0.1.3680043.10.1"]
    assert [n.ae_title for n in pair.nodes.list_nodes()] == ["NODE"]
    assert pair.nodes.remove_node("NODE") is True
    assert pair.catalog.get_study(P, "1.2.826.0.1.3680043.10.1") is not None


# -- `pacs nodes` and the `pacs up --config` file ---------------------------------------------------------


def test_config_file_nodes_and_settings(tmp_path: Path) -> None:
    from pacs.cli.nodes import apply_config
    from pacs.config import Settings

    cfg = tmp_path / "pacs.toml"
    cfg.write_text(
        '[pacs]\nae_title = "ARCHIVE"\ngateway_workers = 3\ndata_dir = "/srv/pacs"\n\n'
        '[[nodes]]\nae_title = "STORESCP"\nhost = "127.0.0.1"\nport = 11113\n'
        'operations = ["store", "MOVE"]\ndescription = "archive"\n\n'
        '[[nodes]]\nae_title = "WS"\nhost = "ws.example"\nport = 104\ntls = true\n'
    )
    settings, nodes = apply_config(cfg, Settings(gateway_workers=1), ["gateway_workers"],
                                   environ={"PACS_DATA_DIR": "/elsewhere"})
    assert settings.ae_title == "ARCHIVE"
    assert settings.gateway_workers == 1  # a flag wins over the file
    assert settings.data_dir == Path("pacs-data")  # so does a PACS_* variable (already in settings)
    assert nodes == [
        RemoteNode("STORESCP", "127.0.0.1", 11113, False, frozenset({"store", "move"}), "archive"),
        RemoteNode("WS", "ws.example", 104, True),
    ]


@pytest.mark.parametrize("text, error", [
    ("[pacs]\nnot_a_setting = 1\n", "not_a_setting"),
    ("[pacs]\ndimse_port = \"x\"\n", "dimse_port must be an integer"),
    ("[[nodes]]\nae_title = \"A\"\nhost = \"h\"\n", "missing port"),
    ("[[nodes]]\nae_title = \"A\"\nhost = \"h\"\nport = 1\noperations = [\"delete\"]\n", "unknown operations"),
    ("[[nodes]]\nae_title = \"A\"\nhost = \"h\"\nport = 1\ncolour = 2\n", "unknown keys"),
    ("[routes]\n", "unknown tables"),
    ("[pacs\n", "pacs.toml"),
])
def test_config_file_errors_name_the_problem(tmp_path: Path, text: str, error: str) -> None:
    from pacs.cli.nodes import read_config

    cfg = tmp_path / "pacs.toml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=error):
        read_config(cfg)


def test_nodes_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pacs.cli.main import main

    d = ["--data-dir", str(tmp_path / "data")]
    assert main(["nodes", "add", "DEST", "127.0.0.1", "11113", "--operations", "move,store", *d]) == 0
    assert main(["nodes", "add", "WS", "ws.example", "104", "--tls", "--description", "reading room", *d]) == 0
    capsys.readouterr()
    assert main(["nodes", "list", *d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["DEST\t127.0.0.1:11113\ttcp\tmove,store\t",
                     "WS\tws.example:104\ttls\tfind,get,move,store\treading room"]
    assert main(["nodes", "remove", "DEST", *d]) == 0
    assert main(["nodes", "remove", "DEST", *d]) == 1
    assert main(["nodes", "add", "X" * 17, "h", "1", *d]) == 2


def test_sqlite_registry_keeps_no_connection_per_thread(tmp_path: Path) -> None:
    """The gateway runs each association in its own thread: reading nodes there must not leave a
    connection (three file descriptors with WAL) behind per thread."""
    import os
    import threading

    from pacs.catalog.nodes_sqlite import SqliteNodeRegistry

    reg = SqliteNodeRegistry(tmp_path / "catalog.db")
    reg.put_node(RemoteNode("DEST", "127.0.0.1", 104))
    before = len(os.listdir("/proc/self/fd"))
    found: list[RemoteNode | None] = []
    for _ in range(20):
        t = threading.Thread(target=lambda: found.append(reg.get_node("DEST")))
        t.start()
        t.join()
    assert found == [RemoteNode("DEST", "127.0.0.1", 104)] * 20
    assert len(os.listdir("/proc/self/fd")) <= before + 2
