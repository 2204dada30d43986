"""The C-MOVE sub-operation loop's sender (`pacs.dimse.retrieve._Sender`) against an in-process pynetdicom
Storage SCP: objects from a store that has no files (S3: bytes) or from files, sent as stored directly or
transcoded through pynetdicom on the same association, and the Tally of their statuses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pacs.catalog.records import InstanceRow
from pacs.dimse.direct import StoreExchange
from pacs.dimse.reactor import EventAE
from pacs.dimse.retrieve import Tally, _Sender
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

CT = "1.2.840.10008.5.1.4.1.1.2"


class BytesStore:
    """A store with objects as bytes only (no local `path`), as the S3 adapter."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get(self, key: str) -> bytes:
        return self.objects[key]


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key


@dataclass
class Peer:
    port: int
    received: list[Any] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def peer() -> Iterator[Peer]:
    found = Peer(0)

    def on_store(event: evt.Event) -> int:
        found.received.append((event.context.transfer_syntax, event.request))
        return found.statuses.get(str(event.request.AffectedSOPInstanceUID), 0x0000)

    ae = AE(ae_title="PEER")
    ae.maximum_pdu_size = 8192
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    found.port = server.server_address[1]
    yield found
    server.shutdown()


def _objects(tmp_path: Path, n: int, syntax: str = ExplicitVRLittleEndian) -> list[tuple[InstanceRow, bytes]]:
    out = []
    for k in range(n):
        ds = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = syntax
        key = f"default/studies/1.2/series/1.2.3/instances/{ds.SOPInstanceUID}.dcm"
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        row = InstanceRow("default", "1.2", "1.2.3", str(ds.SOPInstanceUID), CT, syntax, key, 0, "", "", {})
        out.append((row, path.read_bytes()))
        del k
    return out


def _body(data: bytes) -> bytes:
    return data[144 + int.from_bytes(data[140:144], "little"):]


def _run(peer: Peer, store: Any, rows: list[InstanceRow], syntaxes: list[str]) -> Tally:
    ae = EventAE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, syntaxes)
    assoc = ae.associate("127.0.0.1", peer.port, ae_title="PEER")
    assert assoc.is_established
    exchange = StoreExchange.open(assoc)
    assert exchange is not None
    tally = Tally(len(rows))
    try:
        sender = _Sender(exchange, assoc, store, "MOVER", 7)
        for n, row in enumerate(rows):
            item = sender.prepare(row, n)
            tally.count(sender.outcome(item, sender.write(item)), row.sop_uid)
    finally:
        exchange.close()
        assoc.release()
        ae.shutdown()
    return tally


@pytest.mark.parametrize("kind", ["bytes", "files"])
def test_objects_go_as_stored_byte_for_byte(tmp_path: Path, peer: Peer, kind: str) -> None:
    objects = _objects(tmp_path, 4)
    store: Any = FileStore(tmp_path)
    if kind == "bytes":
        store = BytesStore()
        store.objects = {row.key: data for row, data in objects}
    peer.statuses = {objects[1][0].sop_uid: 0xA700, objects[2][0].sop_uid: 0xB000}
    tally = _run(peer, store, [row for row, _ in objects], [ExplicitVRLittleEndian])
    assert (tally.remaining, tally.completed, tally.failed, tally.warning) == (0, 2, 1, 1)
    assert tally.failed_uids == [objects[1][0].sop_uid]
    assert [req.AffectedSOPInstanceUID for _, req in peer.received] == [row.sop_uid for row, _ in objects]
    for (_, req), (_, data) in zip(peer.received, objects, strict=True):
        assert req.DataSet.getvalue() == _body(data)
        assert req.MoveOriginatorApplicationEntityTitle == "MOVER" and req.MoveOriginatorMessageID == 7
    assert [req.MessageID for _, req in peer.received] == [8, 9, 10, 11]


def test_implicit_objects_are_transcoded_through_pynetdicom_between_direct_ones(tmp_path: Path, peer: Peer) -> None:
    explicit = _objects(tmp_path, 2)
    implicit = _objects(tmp_path, 1, ImplicitVRLittleEndian)  # the peer takes Explicit VR LE only
    objects = [explicit[0], implicit[0], explicit[1]]
    tally = _run(peer, FileStore(tmp_path), [row for row, _ in objects],
                 [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assert (tally.completed, tally.failed) == (3, 0)
    assert [req.AffectedSOPInstanceUID for _, req in peer.received] == [row.sop_uid for row, _ in objects]
    assert {ts for ts, _ in peer.received} == {ExplicitVRLittleEndian}
    assert peer.received[0][1].DataSet.getvalue() == _body(explicit[0][1])
    assert peer.received[2][1].DataSet.getvalue() == _body(explicit[1][1])


def test_a_missing_object_fails_its_sub_operation_only(tmp_path: Path, peer: Peer) -> None:
    objects = _objects(tmp_path, 3)
    (tmp_path / objects[1][0].key).unlink()
    tally = _run(peer, FileStore(tmp_path), [row for row, _ in objects], [ExplicitVRLittleEndian])
    assert (tally.completed, tally.failed, tally.failed_uids) == (2, 1, [objects[1][0].sop_uid])
