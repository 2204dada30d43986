"""DIMSE in any syntax: C-MOVE, C-GET and `pacs store` send each instance as stored when the peer accepts
that, else in the node's preferred syntax or the best accepted one a codec produces (`pacs.dimse.proposals`).

Peers: dcmtk storescp processes whose `--config-file` profile accepts CT Image Storage in one syntax only
(JPEG-LS Lossless, or Explicit VR LE), or every syntax (`+xa`), registered as nodes (some with
`--preferred-syntax`); a pynetdicom C-GET requestor proposing JPEG-LS only. What they received is read
back and its pixels compared with the originals (and decoded by dcmtk's `dcmdjpls` as well). One `pacs up`
for the module, holding native CTs, JPEG-LS CTs and a 32-bit CT that no JPEG-LS encoder takes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from .conftest import Launcher
from .dicomgen import COLUMNS, ROWS, Instance, Study, new_study, write_extra_instance
from .support import Moved, PacsProcess, Qido, free_port, run_tool, terminate, wait_indexed, wait_until
from .test_tls_policy import Pki, make_pki

pytestmark = pytest.mark.interop

SUCCESS, WARNING = 0x0000, 0xB000

#: storescp profiles: CT Image Storage in JPEG-LS Lossless only, or in Explicit VR LE only (and
#: Verification, for the C-ECHO that tells the process is ready).
STORESCP_CONFIG = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = 1.2.840.10008.1.2.1
TransferSyntax2 = 1.2.840.10008.1.2
[JPEGLSOnly]
TransferSyntax1 = 1.2.840.10008.1.2.4.80
[ExplicitOnly]
TransferSyntax1 = 1.2.840.10008.1.2.1

[[PresentationContexts]]
[JPEGLSOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = CTImageStorage\\JPEGLSOnly
[ExplicitOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = CTImageStorage\\ExplicitOnly

[[Profiles]]
[JPEGLSOnly]
PresentationContexts = JPEGLSOnly
[ExplicitOnly]
PresentationContexts = ExplicitOnly
"""


@dataclass
class Stored:
    pacs: PacsProcess
    tools: Callable[[str], str]
    config: Path
    native: Study  # three Explicit VR LE CTs
    jls: Study  # three JPEG-LS Lossless CTs
    mixed: Study  # two Explicit VR LE CTs and one 32-bit CT (JPEG-LS carries at most 16 bits)
    wide: Instance
    pki: Pki

    def nodes(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "pacs.cli.main", "nodes", *args, "--data-dir", str(self.pacs.data_dir)]
        run = run_tool(cmd, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def _study(key: str, base: Path, syntax: str, n: int) -> Study:
    study, series = new_study(key, patient_id=f"PAT-{key.upper()}")
    for k in range(1, n + 1):
        series.instances.append(write_extra_instance(series, study, k, base / key / f"{k}.dcm", syntax))
    return study


@pytest.fixture(scope="module")
def stored(launch_module: Launcher, dcmtk: Callable[[str], str], storescu_profile: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Stored:
    base = tmp_path_factory.mktemp("transcode-set")
    native = _study("tsnative", base, ExplicitVRLittleEndian, 3)
    jls = _study("tsjls", base, JPEGLSLossless, 3)
    mixed = _study("tsmixed", base, ExplicitVRLittleEndian, 2)
    series = mixed.series[0]
    wide_pixels = (np.arange(ROWS * COLUMNS, dtype=np.uint32) * 70_001).tobytes()
    wide = write_extra_instance(series, mixed, 3, base / "tsmixed" / "3.dcm", BitsAllocated=32, BitsStored=32,
                                HighBit=31, PixelData=wide_pixels)
    series.instances.append(wide)
    config = base / "storescp.cfg"
    config.write_text(STORESCP_CONFIG)
    pki = make_pki(tmp_path_factory.mktemp("transcode-pki"))
    pacs = launch_module(workers=2, name="transcode", env={  # TLS destinations checked against this CA
        "PACS_TLS_CERT": str(pki.server_cert), "PACS_TLS_KEY": str(pki.server_key), "PACS_TLS_CA": str(pki.ca),
        "PACS_TLS_PORT": str(free_port()),
    })
    files = [str(i.path) for s in (native, jls, mixed) for i in s.instances]
    run = run_tool([dcmtk("storescu"), "-aec", "PACS", "-xf", str(storescu_profile), "AsStored", "127.0.0.1",
                    str(pacs.dimse_port), *files], timeout=300)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    qido = Qido(pacs)
    try:
        wait_indexed(qido, [native, jls, mixed], timeout=120)
    finally:
        qido.close()
    return Stored(pacs, dcmtk, config, native, jls, mixed, wide, pki)


@dataclass
class Peer:
    """A dcmtk storescp; `received()` reads what it wrote."""

    ae_title: str
    port: int
    out: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def received(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in self.out.iterdir():
            if p.is_file() and not p.name.startswith("."):
                try:
                    found[str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)] = p
                except Exception:
                    continue  # being written
        return found


@pytest.fixture
def peer(stored: Stored, tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """`peer(AE, profile or None, preferred=NAME)`: a storescp accepting CT in the profile's syntax only
    (None: `+xa`, every syntax), registered as a node (with the preferred syntax when given)."""
    started: list[tuple[Peer, Path]] = []

    def start(ae_title: str, profile: str | None, *, preferred: str | None = None, tls: bool = False) -> Peer:
        out = tmp_path / ae_title
        out.mkdir()
        log = tmp_path / f"{ae_title}.log"
        port = free_port()
        accept = ["-xf", str(stored.config), profile] if profile else ["+xa"]
        if tls:  # the server certificate of the test CA; no client certificate asked
            accept += ["+tls", str(stored.pki.server_key), str(stored.pki.server_cert), "-ic"]
        with open(log, "wb") as f:
            proc = subprocess.Popen([stored.tools("storescp"), "-v", "-aet", ae_title, "-od", str(out), *accept,
                                     str(port)], stdout=f, stderr=subprocess.STDOUT)
        p = Peer(ae_title, port, out, proc)
        started.append((p, log))
        echo = [stored.tools("echoscu"), "-aec", ae_title, "127.0.0.1", str(port)]
        if tls:
            echo[1:1] = ["+tls", str(stored.pki.client_key), str(stored.pki.client_cert), "+cf", str(stored.pki.ca)]
        wait_until(lambda: proc.poll() is not None or run_tool(echo, timeout=30).returncode == 0,
                   bool, timeout=30, what="storescp to answer C-ECHO")
        assert proc.poll() is None, log.read_text(errors="replace")
        stored.nodes("add", ae_title, "127.0.0.1", str(port), *(["--tls"] if tls else []),
                     *(["--preferred-syntax", preferred] if preferred else []))
        return p

    yield start
    for p, _ in started:
        terminate(p.proc)
        stored.nodes("remove", p.ae_title)


def movescu(stored: Stored, destination: str, study: Study) -> Moved:
    return Moved(run_tool([stored.tools("movescu"), "-d", "-S", "-aec", "PACS", "-aem", destination,
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}",
                           "127.0.0.1", str(stored.pacs.dimse_port)], timeout=180))


def pixels(path: Path | Dataset) -> np.ndarray:
    ds = path if isinstance(path, Dataset) else pydicom.dcmread(path)
    return np.asarray(ds.pixel_array)


def assert_received(got: dict[str, Path], instances: list[Instance], syntax: str) -> None:
    """Every instance arrived in `syntax`, its pixels equal to the original's."""
    assert set(got) == {i.sop_uid for i in instances}
    for inst in instances:
        ds = pydicom.dcmread(got[inst.sop_uid])
        assert ds.file_meta.TransferSyntaxUID == syntax, inst.sop_uid
        assert np.array_equal(pixels(ds), pixels(inst.path)), inst.sop_uid


def assert_dcmtk_decodes_equal(stored: Stored, received: Path, original: Path, tmp_path: Path) -> None:
    """dcmtk's JPEG-LS decoder reads what was sent: the same pixels as the original's."""
    out = tmp_path / f"dcmdjpls-{received.name}.dcm"
    run = run_tool([stored.tools("dcmdjpls"), str(received), str(out)])
    assert run.returncode == 0, run.stdout + run.stderr
    assert np.array_equal(pixels(out), pixels(original))


# -- C-MOVE ---------------------------------------------------------------------------------------------------


def test_move_native_ct_to_a_jpeg_ls_only_archive(stored: Stored, peer: Callable[..., Peer], tmp_path: Path) -> None:
    dest = peer("JLSARCH", "JPEGLSOnly", preferred="jpeg-ls-lossless")
    moved = movescu(stored, dest.ae_title, stored.native)
    assert moved.status == SUCCESS, moved.log
    assert moved.count("Completed") == 3
    got = dest.received()
    assert_received(got, stored.native.instances, JPEGLSLossless)  # encoded here, lossless
    first = stored.native.instances[0]
    assert_dcmtk_decodes_equal(stored, got[first.sop_uid], first.path, tmp_path)


def test_move_jpeg_ls_ct_to_a_jpeg_ls_only_archive(stored: Stored, peer: Callable[..., Peer]) -> None:
    dest = peer("JLSARCH2", "JPEGLSOnly", preferred="JPEGLSLossless")
    moved = movescu(stored, dest.ae_title, stored.jls)
    assert moved.status == SUCCESS, moved.log
    got = dest.received()
    assert_received(got, stored.jls.instances, JPEGLSLossless)
    for inst in stored.jls.instances:  # sent as stored: the very same compressed bytes
        assert pydicom.dcmread(got[inst.sop_uid]).PixelData == pydicom.dcmread(inst.path).PixelData


def test_move_in_the_preferred_syntax_to_a_peer_accepting_everything(
        stored: Stored, peer: Callable[..., Peer]) -> None:
    prefers = peer("PREFJLS", None, preferred=JPEGLSLossless)  # a UID works too
    moved = movescu(stored, prefers.ae_title, stored.native)
    assert moved.status == SUCCESS, moved.log
    assert_received(prefers.received(), stored.native.instances, JPEGLSLossless)
    as_stored = peer("ASSTORED", None)  # no preference: as stored
    moved = movescu(stored, as_stored.ae_title, stored.native)
    assert moved.status == SUCCESS, moved.log
    assert_received(as_stored.received(), stored.native.instances, ExplicitVRLittleEndian)


def test_move_an_instance_no_codec_produces_fails_alone(stored: Stored, peer: Callable[..., Peer]) -> None:
    dest = peer("JLSMIXED", "JPEGLSOnly")
    moved = movescu(stored, dest.ae_title, stored.mixed)
    assert moved.status == WARNING, moved.log
    assert (moved.count("Completed"), moved.count("Failed")) == (2, 1)
    assert stored.wide.sop_uid in moved.log  # the Failed SOP Instance UID List
    assert re.search(r"\[cannot transcode to JPEGLSLossless \(cannot encode.*\] .*ErrorComment", moved.log), \
        moved.log[-3000:]
    others = [i for i in stored.mixed.instances if i != stored.wide]
    assert_received(dest.received(), others, JPEGLSLossless)


def test_move_over_tls_transcodes_through_pynetdicoms_loop(stored: Stored, peer: Callable[..., Peer]) -> None:
    dest = peer("JLSTLS", "JPEGLSOnly", preferred="jpeg-ls-lossless", tls=True)
    moved = movescu(stored, dest.ae_title, stored.mixed)
    assert moved.status == WARNING, moved.log
    assert (moved.count("Completed"), moved.count("Failed")) == (2, 1)
    assert stored.wide.sop_uid in moved.log
    assert_received(dest.received(), [i for i in stored.mixed.instances if i != stored.wide], JPEGLSLossless)


# -- C-GET ----------------------------------------------------------------------------------------------------


def test_get_to_a_requestor_accepting_only_jpeg_ls(stored: Stored) -> None:
    received: dict[str, tuple[str, Dataset]] = {}

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = (str(event.context.transfer_syntax), ds)
        return 0x0000

    ae = AE(ae_title="GETJLS")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [JPEGLSLossless])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    results = {}
    try:
        for study in (stored.native, stored.mixed):
            identifier.StudyInstanceUID = study.uid
            assoc = ae.associate("127.0.0.1", stored.pacs.dimse_port, ae_title="PACS",
                                 ext_neg=[build_role(CTImageStorage, scp_role=True)],
                                 evt_handlers=[(evt.EVT_C_STORE, on_store)])
            assert assoc.is_established
            results[study.uid] = [s for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)][-1]
            assoc.release()
    finally:
        ae.shutdown()
    assert results[stored.native.uid].Status == SUCCESS
    final = results[stored.mixed.uid]
    assert final.Status == WARNING and final.NumberOfFailedSuboperations == 1
    assert final.NumberOfCompletedSuboperations == 2
    expected = [i for i in (*stored.native.instances, *stored.mixed.instances) if i != stored.wide]
    assert set(received) == {i.sop_uid for i in expected}
    for inst in expected:
        syntax, ds = received[inst.sop_uid]
        assert syntax == JPEGLSLossless
        assert np.array_equal(pixels(ds), pixels(inst.path))


# -- pacs store -------------------------------------------------------------------------------------------------


def pacs_store(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pacs")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pacs.cli.main"]
    return run_tool([*cmd, "store", *args], timeout=180)


def test_store_jpeg_ls_files_to_an_explicit_only_peer(stored: Stored, peer: Callable[..., Peer]) -> None:
    dest = peer("EXPLONLY", "ExplicitOnly")
    run = pacs_store(dest.address, *(str(i.path) for i in stored.jls.instances))
    assert run.returncode == 0, run.stdout + run.stderr
    assert_received(dest.received(), stored.jls.instances, ExplicitVRLittleEndian)  # decoded here


def test_store_native_files_to_a_jpeg_ls_only_peer(stored: Stored, peer: Callable[..., Peer], tmp_path: Path) -> None:
    dest = peer("JLSSTORE", "JPEGLSOnly")
    files = [str(i.path) for i in stored.mixed.instances]
    run = pacs_store(dest.address, *files)
    assert run.returncode == 1, run.stdout + run.stderr  # one file failed
    assert "3 file(s): 2 stored, 0 with a warning, 1 failed" in run.stdout, run.stdout
    assert f"not sent {stored.wide.path} {stored.wide.sop_uid}: cannot transcode to JPEGLSLossless" in run.stdout
    others = [i for i in stored.mixed.instances if i != stored.wide]
    got = dest.received()
    assert_received(got, others, JPEGLSLossless)  # encoded here
    assert_dcmtk_decodes_equal(stored, got[others[0].sop_uid], others[0].path, tmp_path)


def test_store_with_a_preferred_syntax(stored: Stored, peer: Callable[..., Peer]) -> None:
    dest = peer("ANYSTORE", None)
    run = pacs_store(dest.address, "--preferred-syntax", "jpeg-ls-lossless",
                     *(str(i.path) for i in stored.native.instances))
    assert run.returncode == 0, run.stdout + run.stderr
    assert_received(dest.received(), stored.native.instances, JPEGLSLossless)
    bad = pacs_store(dest.address, "--preferred-syntax", "no-such-syntax", str(stored.native.instances[0].path))
    assert bad.returncode == 2 and "unknown transfer syntax 'no-such-syntax'" in bad.stderr
