"""`pacs echo|store|find|move|get` against `pacs up`, a dcmtk `storescp` and Orthanc (as a remote node:
store, find, get, and a move to the storescp), statuses checked and what was stored or received verified
byte for byte (the data set after the file meta) or by SOP Instance UID."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from .conftest import Launcher
from .dicomgen import DataSet, Instance
from .support import (
    PATIENT_ID,
    STUDY_UID,
    PacsProcess,
    Qido,
    dataset_bytes,
    free_port,
    instance_path,
    run_tool,
    terminate,
    value,
    wait_indexed,
    wait_until,
)

pytestmark = pytest.mark.interop


def pacs_cli(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pacs")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pacs.cli.main"]
    return run_tool([*cmd, *args], timeout=timeout)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@dataclass
class Target:
    pacs: PacsProcess
    node: str  # AE@HOST:PORT


@dataclass
class StoreScp:
    proc: subprocess.Popen[bytes]
    port: int
    out_dir: Path

    def received(self) -> dict[str, Path]:
        """SOP Instance UID -> file, of every complete file storescp wrote."""
        found = {}
        for p in self.out_dir.iterdir():
            if p.is_file():
                try:
                    found[str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)] = p
                except Exception:
                    continue  # being written
        return found


@pytest.fixture(scope="module")
def target(launch_module: Launcher, dataset: DataSet) -> Iterator[Target]:
    pacs = launch_module(workers=2, name="scu")
    yield Target(pacs, f"PACS@127.0.0.1:{pacs.dimse_port}")


@pytest.fixture(scope="module")
def stored(target: Target, dataset: DataSet) -> str:
    """The generated set (native and compressed), stored with `pacs store --recursive`; its output."""
    out = ok(pacs_cli("store", target.node, "--recursive", str(dataset.root)))
    qido = Qido(target.pacs)
    try:
        wait_indexed(qido, dataset.studies)
    finally:
        qido.close()
    return out


def native(instances: list[Instance]) -> list[Instance]:
    return [i for i in instances if "native" in i.path.parts]


@pytest.fixture(scope="module")
def storescp(dcmtk: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    out_dir = tmp_path_factory.mktemp("storescp")
    port = free_port()
    log = open(out_dir.parent / "storescp.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out_dir), str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: run_tool([dcmtk("echoscu"), "-aec", "STORESCP", "127.0.0.1", str(port)]).returncode,
               lambda rc: rc == 0, timeout=60, what="storescp to answer C-ECHO")
    yield StoreScp(proc, port, out_dir)
    terminate(proc)
    log.close()


# -- echo, store ------------------------------------------------------------------------------------------

def test_echo(target: Target, storescp: StoreScp) -> None:
    assert "0x0000 Success" in ok(pacs_cli("echo", target.node))
    assert "0x0000 Success" in ok(pacs_cli("echo", f"STORESCP@127.0.0.1:{storescp.port}", "-aet", "ME"))


def test_store_recursive_stores_every_file_as_sent(target: Target, dataset: DataSet, stored: str) -> None:
    files = dataset.instances
    assert f"{len(files)} file(s): {len(files)} stored, 0 with a warning, 0 failed" in stored
    for inst in files:
        assert f"0x0000 Success {inst.path}" in " ".join(stored.split()), f"no status line for {inst.path}"
        assert_same(instance_path(target.pacs.objects_dir, inst), inst)


def assert_same(received: Path, inst: Instance) -> None:
    """The received file holds the instance: byte for byte after the file meta, except an Implicit VR
    file, which the store sender's native context delivers as Explicit VR LE (same elements)."""
    if inst.transfer_syntax == ImplicitVRLittleEndian:
        assert pydicom.dcmread(received) == pydicom.dcmread(inst.path)
    else:
        assert dataset_bytes(received.read_bytes()) == dataset_bytes(inst.path.read_bytes())


def test_store_to_dcmtk_storescp(storescp: StoreScp, dataset: DataSet) -> None:
    study = dataset.studies[0]
    files = native(study.instances)
    out = ok(pacs_cli("store", f"STORESCP@127.0.0.1:{storescp.port}", *(str(i.path) for i in files)))
    assert f"{len(files)} stored" in out
    received = wait_until(storescp.received, lambda r: {i.sop_uid for i in files} <= set(r), timeout=60,
                          what="storescp to write every instance")
    for inst in files:
        assert_same(received[inst.sop_uid], inst)


def test_store_reports_what_is_not_dicom(target: Target, dataset: DataSet, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    out = pacs_cli("store", target.node, str(junk), str(dataset.instances[0].path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "skipped" in out.stdout and "2 file(s): 1 stored, 0 with a warning, 1 failed" in out.stdout


def test_a_directory_needs_scan_or_recursive(target: Target, dataset: DataSet) -> None:
    out = pacs_cli("store", target.node, str(dataset.native_dir))
    assert out.returncode == 2 and "+sd" in out.stderr, out.stdout + out.stderr


def test_an_unreachable_node(dataset: DataSet) -> None:
    out = pacs_cli("echo", f"NOBODY@127.0.0.1:{free_port()}", "-to", "10")
    assert out.returncode == 2 and "NOBODY@127.0.0.1" in out.stderr, out.stdout + out.stderr


def test_nodes_by_ae_title_from_the_registry(target: Target, tmp_path: Path) -> None:
    data_dir = str(target.pacs.data_dir)
    ok(pacs_cli("nodes", "add", "PACS", "127.0.0.1", str(target.pacs.dimse_port), "--data-dir", data_dir))
    assert "0x0000 Success" in ok(pacs_cli("echo", "PACS", "--data-dir", data_dir))
    missing = pacs_cli("echo", "NOSUCHNODE", "--data-dir", data_dir)
    assert missing.returncode == 2 and "no such node" in missing.stderr


# -- find -----------------------------------------------------------------------------------------------------

def find_json(node: str, *args: str) -> list[dict]:
    return list(json.loads(ok(pacs_cli("find", node, "--json", *args))))


def test_find_studies_of_a_patient(target: Target, dataset: DataSet, stored: str) -> None:
    found = find_json(target.node, "-S", "-L", "STUDY", "-k", "PatientID=PAT001", "-k", "StudyInstanceUID",
                      "-k", "0010,0010")
    expected = {s.uid for s in dataset.studies if s.patient_id == "PAT001"}
    assert {value(m, STUDY_UID) for m in found} == expected
    assert {value(m, PATIENT_ID) for m in found} == {"PAT001"}


def test_find_patients_with_a_wildcard(target: Target, dataset: DataSet, stored: str) -> None:
    found = find_json(target.node, "-P", "-L", "PATIENT", "-k", "0010,0020=PAT*", "-k", "PatientName")
    assert {value(m, PATIENT_ID) for m in found} == {s.patient_id for s in dataset.studies}


def test_find_table_output(target: Target, stored: str) -> None:
    out = ok(pacs_cli("find", target.node, "-L", "PATIENT", "-P", "-k", "PatientID=PAT001", "-k", "PatientName"))
    assert "1 match(es)" in out and "final status 0x0000 Success" in out


def test_find_with_an_unknown_keyword(target: Target) -> None:
    out = pacs_cli("find", target.node, "-L", "STUDY", "-k", "NoSuchKeyword=1")
    assert out.returncode == 2 and "unknown keyword" in out.stderr


# -- move, get ---------------------------------------------------------------------------------------------

def test_move_a_study_to_storescp(target: Target, storescp: StoreScp, dataset: DataSet, stored: str) -> None:
    ok(pacs_cli("nodes", "add", "STORESCP", "127.0.0.1", str(storescp.port),
                "--data-dir", str(target.pacs.data_dir)))
    study = next(s for s in dataset.studies if len(native(s.instances)) >= 2 and s != dataset.studies[0])
    out = ok(pacs_cli("move", target.node, "-aem", "STORESCP", "-L", "STUDY",
                      "-k", f"StudyInstanceUID={study.uid}"))
    assert "C-MOVE final status 0x0000 Success" in out
    received = wait_until(storescp.received, lambda r: {i.sop_uid for i in study.instances} <= set(r),
                          timeout=60, what="storescp to receive the moved study")
    for inst in native(study.instances):  # compressed ones are transcoded for storescp
        assert dataset_bytes(received[inst.sop_uid].read_bytes()) == dataset_bytes(inst.path.read_bytes())


def test_move_to_an_unknown_destination(target: Target, stored: str, dataset: DataSet) -> None:
    out = pacs_cli("move", target.node, "-aem", "NOWHERE", "-L", "STUDY",
                   "-k", f"StudyInstanceUID={dataset.studies[0].uid}")
    assert out.returncode == 1 and "0xA801" in out.stdout, out.stdout + out.stderr


def test_get_a_series_into_a_directory(target: Target, dataset: DataSet, stored: str, tmp_path: Path) -> None:
    series = next(se for se in dataset.series if native(se.instances))
    study = next(s for s in dataset.studies if series in s.series)
    out = ok(pacs_cli("get", target.node, "-od", str(tmp_path), "-L", "SERIES",
                      "-k", f"StudyInstanceUID={study.uid}", "-k", f"SeriesInstanceUID={series.uid}"))
    assert "C-GET final status 0x0000 Success" in out
    for inst in series.instances:
        got = tmp_path / f"{inst.sop_uid}.dcm"
        assert got.exists(), f"{inst.sop_uid} not received"
        if inst in native(series.instances):
            assert dataset_bytes(got.read_bytes()) == dataset_bytes(inst.path.read_bytes())
    assert not list(tmp_path.glob("*.part"))


# -- Orthanc as the remote node ---------------------------------------------------------------------------

@dataclass
class Orthanc:
    proc: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int

    @property
    def node(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom_port}"

    def count(self) -> int:
        import httpx

        return int(httpx.get(f"http://127.0.0.1:{self.http_port}/statistics", timeout=30).json()["CountInstances"])


ORTHANC = Path("/usr/sbin/Orthanc")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, storescp: StoreScp) -> Iterator[Orthanc]:
    """Orthanc on free ports, empty, knowing STORESCP (C-MOVE destination) and answering any caller."""
    if not ORTHANC.exists():
        pytest.fail(f"Orthanc is not installed at {ORTHANC}: run `make setup` (Debian orthanc)")
    d = tmp_path_factory.mktemp("orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "test", "StorageDirectory": str(d / "db"), "IndexDirectory": str(d / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "Plugins": [],
        "DicomModalities": {"STORESCP": ["STORESCP", "127.0.0.1", storescp.port]},
    }
    (d / "orthanc.json").write_text(json.dumps(config))
    log = open(d / "orthanc.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([str(ORTHANC), str(d / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(proc, dicom_port, http_port)
    try:
        wait_until(lambda: pacs_cli("echo", server.node, "-to", "10").returncode, lambda rc: rc == 0,
                   timeout=60, what="Orthanc to answer C-ECHO")
        yield server
    finally:
        terminate(proc)
        log.close()


@pytest.fixture(scope="module")
def in_orthanc(orthanc: Orthanc, dataset: DataSet) -> Orthanc:
    out = ok(pacs_cli("store", orthanc.node, "-aet", "PACS", "--recursive", str(dataset.root)))
    n = len(dataset.instances)
    assert f"{n} file(s): {n} stored" in out
    assert orthanc.count() == n
    return orthanc


def test_orthanc_find(in_orthanc: Orthanc, dataset: DataSet) -> None:
    found = find_json(in_orthanc.node, "-S", "-L", "STUDY", "-k", "PatientID=PAT002", "-k", "StudyInstanceUID")
    assert {value(m, STUDY_UID) for m in found} == {s.uid for s in dataset.studies if s.patient_id == "PAT002"}
    patients = find_json(in_orthanc.node, "-P", "-L", "PATIENT", "-k", "PatientID")
    assert {value(m, PATIENT_ID) for m in patients} == {s.patient_id for s in dataset.studies}


def test_orthanc_get(in_orthanc: Orthanc, dataset: DataSet, tmp_path: Path) -> None:
    study = dataset.studies[0]
    out = ok(pacs_cli("get", in_orthanc.node, "-od", str(tmp_path), "-L", "STUDY",
                      "-k", f"StudyInstanceUID={study.uid}"))
    assert "C-GET final status 0x0000 Success" in out
    for inst in study.instances:
        got = tmp_path / f"{inst.sop_uid}.dcm"
        assert got.exists(), f"{inst.sop_uid} not received from Orthanc"
        assert pydicom.dcmread(got).SOPInstanceUID == inst.sop_uid


def test_orthanc_move_to_storescp(in_orthanc: Orthanc, storescp: StoreScp, dataset: DataSet) -> None:
    study = dataset.studies[-1]
    out = ok(pacs_cli("move", in_orthanc.node, "-aem", "STORESCP", "-L", "STUDY",
                      "-k", f"StudyInstanceUID={study.uid}"))
    assert "C-MOVE final status 0x0000 Success" in out
    wait_until(storescp.received, lambda r: {i.sop_uid for i in study.instances} <= set(r), timeout=60,
               what="storescp to receive the study moved by Orthanc")
