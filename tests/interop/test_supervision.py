"""`pacs up` when gateway processes die (gateway.server.Supervisor, pacs.cli.up.Child) and what
interrupted transfers leave in the spool directory (gateway.spool):
- a worker killed (SIGKILL) in the middle of a C-STORE is replaced; its association slots are
  released (`max_associations` usable again) and its spool file removed;
- DICOMweb keeps serving while every worker, or the whole gateway, is down, and DIMSE comes back;
- a C-STORE cut off by an A-ABORT, a reset, an A-RELEASE-RQ or a stall leaves no spool file once its
  association ends; files left by a killed process are removed at start-up.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .conftest import Launcher
from .support import PacsProcess, dataset_bytes, wait_until

pytestmark = pytest.mark.interop

MAX_ASSOCIATIONS = 4
DEADLINE = 90.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gateway_pid(pacs: PacsProcess) -> int:
    assert pacs.proc is not None
    return wait_until(lambda: [p for p in children(pacs.proc.pid) if "-m gateway" in cmdline(p)],  # type: ignore[union-attr]
                      lambda found: len(found) == 1, timeout=DEADLINE)[0]


def workers(pacs: PacsProcess) -> set[int]:
    return set(children(gateway_pid(pacs)))


def spool_files(pacs: PacsProcess) -> list[str]:
    return sorted(p.name for p in (pacs.data_dir / "spool").glob("*.dcm"))


def healthy(pacs: PacsProcess) -> bool:
    try:
        return requests.get(f"{pacs.http_url}/health", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def associate(pacs: PacsProcess) -> Association:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", pacs.dimse_port, ae_title="PACS")


def close(*assocs: Association) -> None:
    for assoc in assocs:
        if assoc.is_established:
            assoc.abort()
        assoc.ae.shutdown()


def all_slots_usable(pacs: PacsProcess) -> bool:
    """MAX_ASSOCIATIONS associations at once are all accepted."""
    held = [associate(pacs) for _ in range(MAX_ASSOCIATIONS)]
    try:
        return all(a.is_established for a in held)
    finally:
        close(*held)


def half_a_c_store(assoc: Association) -> None:
    """Send a C-STORE-RQ of pydicom's CT_small.dcm (a new SOP Instance UID) and the first fragments
    of its data set, never the last one."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # Explicit VR Little Endian
    ds.SOPInstanceUID = generate_uid()
    data = io.BytesIO()
    ds.save_as(data, enforce_file_format=True)
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = CTImageStorage
    req.AffectedSOPInstanceUID = ds.SOPInstanceUID
    req.Priority = 2
    req.DataSet = io.BytesIO(dataset_bytes(data.getvalue()))
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    (cx,) = [c for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage]
    pdus = list(msg.encode_msg(cx.context_id, 8192))
    assert len(pdus) > 3
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    for primitive in pdus[:-1]:
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        raw.sendall(pdu.encode())


@contextmanager
def transfer_in_flight(pacs: PacsProcess) -> Iterator[tuple[Association, str]]:
    """An association in the middle of a C-STORE, and the name of its spool file."""
    before = set(spool_files(pacs))
    assoc = associate(pacs)
    assert assoc.is_established
    try:
        half_a_c_store(assoc)
        new = wait_until(lambda: set(spool_files(pacs)) - before, bool, timeout=DEADLINE)
        yield assoc, sorted(new)[0]
    finally:
        close(assoc)


@pytest.fixture
def pacs(launch: Launcher) -> PacsProcess:
    return launch(workers=2, env={"PACS_MAX_ASSOCIATIONS": str(MAX_ASSOCIATIONS)})


def test_a_worker_killed_mid_transfer_is_replaced_with_its_slots_and_spool_released(pacs: PacsProcess) -> None:
    first = workers(pacs)
    assert len(first) == 2
    with transfer_in_flight(pacs) as (_, name):
        victim = int(name.split("-")[0])  # spool files are named {pid}-{n}.dcm
        assert victim in first
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: workers(pacs), lambda now: len(now) == 2 and victim not in now, timeout=DEADLINE)
    wait_until(lambda: spool_files(pacs), lambda left: left == [], timeout=DEADLINE)
    # Before: the dead worker's association stayed counted (MAX - 1 usable) for good.
    wait_until(lambda: all_slots_usable(pacs), bool, timeout=DEADLINE)
    assert "killed by SIGKILL" in pacs.log_text()
    assert pacs.running


def test_dicomweb_keeps_serving_while_the_gateway_is_down(pacs: PacsProcess) -> None:
    gateway = gateway_pid(pacs)
    for pid in workers(pacs):  # every worker at once: pacs up used to stop itself
        os.kill(pid, signal.SIGKILL)
    assert healthy(pacs)
    wait_until(lambda: all_slots_usable(pacs), bool, timeout=DEADLINE)
    os.kill(gateway, signal.SIGKILL)  # the gateway's supervisor itself: pacs up restarts it
    assert healthy(pacs)
    wait_until(lambda: gateway_pid(pacs), lambda pid: pid != gateway, timeout=DEADLINE)
    assert healthy(pacs)
    wait_until(lambda: all_slots_usable(pacs), bool, timeout=DEADLINE)
    assert pacs.running


def _abort(assoc: Association) -> None:
    assoc.abort()


def _reset(assoc: Association) -> None:
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: RST
    raw.close()


def _release(assoc: Association) -> None:
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-RELEASE-RQ in the middle of a data set


def _stall(assoc: Association) -> None:
    pass  # nothing more: the gateway's network timeout (PACS_NETWORK_TIMEOUT=2) ends it


@pytest.fixture(scope="module")
def impatient(launch_module: Launcher) -> PacsProcess:
    """One worker that drops a peer silent for 2 s."""
    return launch_module(workers=1, env={"PACS_NETWORK_TIMEOUT": "2"})


@pytest.mark.parametrize("cut", [_abort, _reset, _release, _stall], ids=["abort", "reset", "release", "stall"])
def test_an_interrupted_c_store_leaves_no_spool_file(impatient: PacsProcess, cut: Callable[[Association], None]
                                                     ) -> None:
    pacs = impatient
    with transfer_in_flight(pacs) as (assoc, name):
        cut(assoc)
        wait_until(lambda: spool_files(pacs), lambda left: name not in left, timeout=DEADLINE)
    assert healthy(pacs)


def test_spool_files_of_a_killed_process_are_removed_at_start_up(launch: Launcher, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "spool").mkdir(parents=True)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that is no process now
    orphan = data / "spool" / f"{dead}-0.dcm"
    orphan.write_bytes(b"\0" * 128 + b"DICM")
    other = data / "spool" / "stow-keep.dcm"  # not the gateway's: left alone
    other.write_bytes(b"x")
    pacs = launch(data, workers=2)
    wait_until(lambda: orphan.exists(), lambda there: not there, timeout=DEADLINE)
    assert other.exists()
    assert "spool file(s) left by stopped or killed gateway processes" in pacs.log_text()
