"""A node's preferred transfer syntax (`RemoteNode.preferred_syntax`): names resolved and validated, kept
by both registries (SQLite files made before the column existed, DynamoDB items written without the
attribute), set by `pacs nodes add --preferred-syntax` and the `[[nodes]]` table of `--config`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.catalog.nodes import NodeRegistry, RemoteNode, check_node, resolve_syntax
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from tests.unit.aws import fake_aws_credentials

JLS = str(JPEGLSLossless)


@pytest.mark.parametrize("text", ["jpeg-ls-lossless", "JPEGLSLossless", "JPEG-LS Lossless", JLS,
                                  " jpeg_ls_lossless ", "JPEG-LS Lossless Image Compression"])
def test_names_and_uids_resolve(text: str) -> None:
    assert resolve_syntax(text) == JLS


def test_other_names() -> None:
    assert resolve_syntax("rle-lossless") == RLELossless
    assert resolve_syntax("explicit-vr-little-endian") == ExplicitVRLittleEndian


@pytest.mark.parametrize(("text", "error"), [
    ("jpeg-ls-lossy-please", "unknown transfer syntax"),
    ("1.2.3.4", "unknown transfer syntax"),
    ("MPEG2MPML", "unknown transfer syntax"),  # a syntax no codec encodes, unknown to the registry
])
def test_unknown_names_are_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        resolve_syntax(text)


def test_a_syntax_no_codec_encodes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import pacs.codecs

    monkeypatch.setattr(pacs.codecs, "can_encode", lambda syntax: syntax != JLS)
    with pytest.raises(ValueError, match="cannot be encoded here"):
        resolve_syntax("jpeg-ls-lossless")


def test_check_node_wants_a_uid() -> None:
    check_node(RemoteNode("A", "h", 1, preferred_syntax=JLS))
    with pytest.raises(ValueError, match="preferred syntax"):
        check_node(RemoteNode("A", "h", 1, preferred_syntax="jpeg-ls-lossless"))
    with pytest.raises(ValueError, match="unknown transfer syntax"):
        check_node(RemoteNode("A", "h", 1, preferred_syntax="1.2.3"))


@pytest.fixture(params=["sqlite", "dynamodb"])
def registry(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeRegistry]:
    if request.param == "sqlite":
        from pacs.catalog.nodes_sqlite import SqliteNodeRegistry

        reg = SqliteNodeRegistry(tmp_path / "catalog.db")
        yield reg
        reg.close()
        return
    import moto
    from pacs.catalog.dynamodb import DynamoCatalog
    from pacs.catalog.nodes_dynamodb import DynamoNodeRegistry

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        dynamo = DynamoCatalog("pacs-nodes-pref", create=True)
        dreg = DynamoNodeRegistry("pacs-nodes-pref")
        yield dreg
        dreg.close()
        dynamo.close()


def test_registries_keep_the_preference(registry: NodeRegistry) -> None:
    a = RemoteNode("ARCHIVE", "10.0.0.9", 104, preferred_syntax=JLS)
    b = RemoteNode("WS", "ws.example", 11112)
    registry.put_node(a)
    registry.put_node(b)
    assert registry.get_node("ARCHIVE") == a
    assert registry.get_node("WS") == b and b.preferred_syntax == ""
    assert registry.list_nodes() == [a, b]
    registry.put_node(RemoteNode("ARCHIVE", "10.0.0.9", 104))  # replaced: no preference any more
    assert registry.get_node("ARCHIVE") == RemoteNode("ARCHIVE", "10.0.0.9", 104)


def test_a_sqlite_file_of_an_earlier_release_is_migrated(tmp_path: Path) -> None:
    from pacs.catalog.nodes_sqlite import SqliteNodeRegistry

    db = tmp_path / "catalog.db"
    with sqlite3.connect(db) as old:  # the table as the previous release made it, with a node
        old.execute("CREATE TABLE nodes (ae_title TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,"
                    " tls INTEGER NOT NULL, operations TEXT NOT NULL, description TEXT NOT NULL) WITHOUT ROWID")
        old.execute("INSERT INTO nodes VALUES ('OLD', 'h', 104, 0, 'move,store', 'kept')")
    old.close()
    reg = SqliteNodeRegistry(db)
    try:
        assert reg.get_node("OLD") == RemoteNode("OLD", "h", 104, False, frozenset({"move", "store"}), "kept")
        reg.put_node(RemoteNode("NEW", "h", 105, preferred_syntax=JLS))
        assert reg.get_node("NEW") is not None and reg.get_node("NEW").preferred_syntax == JLS  # type: ignore[union-attr]
    finally:
        reg.close()
    again = SqliteNodeRegistry(db)  # a second open (or another process) finds the column there
    try:
        assert [n.preferred_syntax for n in again.list_nodes()] == [JLS, ""]
    finally:
        again.close()


def test_a_dynamodb_item_without_the_attribute_reads_as_no_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import moto
    from pacs.catalog.dynamodb import DynamoCatalog
    from pacs.catalog.nodes_dynamodb import DynamoNodeRegistry

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        DynamoCatalog("pacs-nodes-old", create=True)
        reg = DynamoNodeRegistry("pacs-nodes-old")
        reg.put_node(RemoteNode("OLD", "h", 104, description="before"))
        table = boto3.resource("dynamodb", region_name="us-east-1").Table("pacs-nodes-old")
        item = table.get_item(Key={"PK": "NODE#OLD", "SK": "NODE"})["Item"]
        assert "preferred_syntax" not in item  # an item as an earlier release wrote it
        assert reg.get_node("OLD") == RemoteNode("OLD", "h", 104, description="before")


def test_nodes_add_with_a_preferred_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pacs.cli.main import main

    d = ["--data-dir", str(tmp_path / "data")]
    assert main(["nodes", "add", "ARCH", "127.0.0.1", "11113", "--preferred-syntax", "jpeg-ls-lossless", *d]) == 0
    assert "preferred syntax JPEGLSLossless" in capsys.readouterr().out
    assert main(["nodes", "add", "WS", "127.0.0.1", "104", "--preferred-syntax", RLELossless, *d]) == 0
    capsys.readouterr()
    assert main(["nodes", "list", *d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["ARCH\t127.0.0.1:11113\ttcp\tfind,get,move,store\t\tJPEGLSLossless",
                     "WS\t127.0.0.1:104\ttcp\tfind,get,move,store\t\tRLELossless"]
    with pytest.raises(SystemExit) as exc:
        main(["nodes", "add", "BAD", "h", "1", "--preferred-syntax", "jpeg-ls-lossy-please", *d])
    assert exc.value.code == 2
    assert "unknown transfer syntax 'jpeg-ls-lossy-please'" in capsys.readouterr().err


def test_config_file_preferred_syntax(tmp_path: Path) -> None:
    from pacs.cli.nodes import read_config

    cfg = tmp_path / "pacs.toml"
    cfg.write_text('[[nodes]]\nae_title = "A"\nhost = "h"\nport = 1\npreferred_syntax = "JPEGLSLossless"\n')
    assert read_config(cfg).nodes[0].preferred_syntax == JLS
    cfg.write_text('[[nodes]]\nae_title = "A"\nhost = "h"\nport = 1\npreferred_syntax = "nope"\n')
    with pytest.raises(ValueError, match=r"\[\[nodes\]\] #1: unknown transfer syntax 'nope'"):
        read_config(cfg)
    cfg.write_text('[[nodes]]\nae_title = "A"\nhost = "h"\nport = 1\npreferred_syntax = 3\n')
    with pytest.raises(ValueError, match="preferred_syntax must be a string"):
        read_config(cfg)
