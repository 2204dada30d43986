"""DICOM TLS and the association policy of `pacs up`, driven by dcmtk tools, Python TLS clients,
raw sockets and pynetdicom.

Certificates are made here with `cryptography`: a CA, the server's certificate, a client certificate
it signed, and a client certificate of another CA. One `pacs up` serves TLS with client certificates
required; another has the allowlist on, a small association limit and short timeouts.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from .conftest import Launcher
from .dicomgen import DataSet, Instance
from .support import PacsProcess, Qido, dataset_bytes, free_port, instance_path, run_tool, wait_until

pytestmark = pytest.mark.interop

ABORT_INVALID_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])


# -- certificates ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by another CA
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, usage: x509.ObjectIdentifier | None
          ) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(d: Path) -> Pki:
    ca_key, rogue_ca_key = _key(), _key()
    ca = _cert("pacs test CA", ca_key, None, ca_key, ca=True, usage=None)
    rogue_ca = _cert("another CA", rogue_ca_key, None, rogue_ca_key, ca=True, usage=None)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    return Pki(
        ca=_write_cert(ca, d / "ca.pem"),
        server_cert=_write_cert(_cert("pacs", server_key, ca.subject, ca_key, ca=False,
                                      usage=ExtendedKeyUsageOID.SERVER_AUTH), d / "server.pem"),
        server_key=_write_key(server_key, d / "server.key"),
        client_cert=_write_cert(_cert("modality", client_key, ca.subject, ca_key, ca=False,
                                      usage=ExtendedKeyUsageOID.CLIENT_AUTH), d / "client.pem"),
        client_key=_write_key(client_key, d / "client.key"),
        rogue_cert=_write_cert(_cert("intruder", rogue_key, rogue_ca.subject, rogue_ca_key, ca=False,
                                     usage=ExtendedKeyUsageOID.CLIENT_AUTH), d / "rogue.pem"),
        rogue_key=_write_key(rogue_key, d / "rogue.key"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class TlsPacs:
    pacs: PacsProcess
    tls_port: int


@pytest.fixture(scope="module")
def tls_pacs(launch_module: Launcher, pki: Pki) -> TlsPacs:
    port = free_port()
    pacs = launch_module(workers=2, env={
        "PACS_TLS_CERT": str(pki.server_cert), "PACS_TLS_KEY": str(pki.server_key),
        "PACS_TLS_CA": str(pki.ca), "PACS_TLS_REQUIRE_CLIENT_CERT": "1", "PACS_TLS_PORT": str(port),
        # connections that never associate (the handshake-only clients below) end after ARTIM, and a
        # stopping worker waits for them: keep it short
        "PACS_ACSE_TIMEOUT": "5",
    }, name="tls")
    assert f"DICOM TLS 127.0.0.1:{port}" in pacs.log_text()
    return TlsPacs(pacs, port)


def native(instances: list[Instance]) -> list[Instance]:
    return [i for i in instances if "native" in i.path.parts]


def tls_echo(dcmtk: Callable[[str], str], port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    return run_tool([dcmtk("echoscu"), *tls, "-aec", "PACS", "-to", "30", "-ta", "30", "127.0.0.1", str(port)])


# -- TLS ---------------------------------------------------------------------------------------------------

def test_echoscu_over_tls_with_a_client_certificate(tls_pacs: TlsPacs, pki: Pki,
                                                    dcmtk: Callable[[str], str]) -> None:
    out = tls_echo(dcmtk, tls_pacs.tls_port, "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca))
    assert out.returncode == 0, out.stdout + out.stderr


def test_storescu_over_tls_stores_the_files(tls_pacs: TlsPacs, pki: Pki, dataset: DataSet,
                                            dcmtk: Callable[[str], str]) -> None:
    study = dataset.studies[0]
    files = [str(i.path) for i in study.instances if "native" in i.path.parts]
    assert files
    out = run_tool([dcmtk("storescu"), "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca),
                    "-aec", "PACS", "127.0.0.1", str(tls_pacs.tls_port), *files])
    assert out.returncode == 0, out.stdout + out.stderr
    for inst in study.instances:
        if str(inst.path) in files:
            stored = instance_path(tls_pacs.pacs.objects_dir, inst)
            assert stored.exists(), f"{inst.sop_uid} not stored"
            assert dataset_bytes(stored.read_bytes()) == dataset_bytes(inst.path.read_bytes())


def test_a_client_without_a_certificate_is_refused(tls_pacs: TlsPacs, pki: Pki,
                                                    dcmtk: Callable[[str], str]) -> None:
    before = tls_pacs.pacs.log_text().count("TLS handshake with")
    out = tls_echo(dcmtk, tls_pacs.tls_port, "+tla", "+cf", str(pki.ca))  # TLS, no client certificate
    assert out.returncode != 0, out.stdout + out.stderr
    wait_until(lambda: tls_pacs.pacs.log_text().count("TLS handshake with"), lambda n: n > before,
               timeout=30, what="the gateway to log the refused handshake")
    assert "certificate" in tls_pacs.pacs.log_text().rsplit("TLS handshake with", 1)[1].splitlines()[0]
    good = tls_echo(dcmtk, tls_pacs.tls_port, "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca))
    assert good.returncode == 0, "the gateway goes on serving"


def test_a_client_certificate_of_another_ca_is_refused(tls_pacs: TlsPacs, pki: Pki,
                                                        dcmtk: Callable[[str], str]) -> None:
    before = tls_pacs.pacs.log_text().count("TLS handshake with")
    out = tls_echo(dcmtk, tls_pacs.tls_port, "+tls", str(pki.rogue_key), str(pki.rogue_cert), "+cf", str(pki.ca))
    assert out.returncode != 0, out.stdout + out.stderr
    wait_until(lambda: tls_pacs.pacs.log_text().count("TLS handshake with"), lambda n: n > before,
               timeout=30, what="the gateway to log the refused handshake")


def _client(pki: Pki, *, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def _handshake(ctx: ssl.SSLContext, port: int) -> str:
    """The negotiated cipher suite; ssl.SSLError when the server refuses."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        cipher = tls.cipher()
        assert cipher is not None
        tls.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # an A-RELEASE-RQ: answered or dropped
        tls.recv(16)  # TLS 1.3 reports a refused client certificate only on the first read
        return cipher[0]


def test_tls_1_3_and_the_permitted_tls_1_2_suites_are_accepted(tls_pacs: TlsPacs, pki: Pki) -> None:
    assert _handshake(_client(pki, version=ssl.TLSVersion.TLSv1_3), tls_pacs.tls_port).startswith("TLS_")
    for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"):
        assert _handshake(_client(pki, version=ssl.TLSVersion.TLSv1_2, ciphers=suite), tls_pacs.tls_port) == suite


def test_a_tls_1_2_suite_outside_the_profile_is_refused(tls_pacs: TlsPacs, pki: Pki) -> None:
    ctx = _client(pki, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA256")  # CBC
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure|NO_SHARED_CIPHER"):
        _handshake(ctx, tls_pacs.tls_port)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_a_tls_1_1_client_is_refused(tls_pacs: TlsPacs, pki: Pki) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot make a TLS 1.1 client: {exc}")
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(ctx, tls_pacs.tls_port)
    # the server's alert, not a local refusal to speak TLS 1.1
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value), refused.value
    assert "PROTOCOL_VERSION" in str(refused.value).upper() or "VERSION" in str(refused.value).upper()


def test_the_plain_port_serves_beside_tls(tls_pacs: TlsPacs, dcmtk: Callable[[str], str]) -> None:
    out = run_tool([dcmtk("echoscu"), "-aec", "PACS", "127.0.0.1", str(tls_pacs.pacs.dimse_port)])
    assert out.returncode == 0, out.stdout + out.stderr


def pacs_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pacs")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pacs.cli.main"]
    return run_tool([*cmd, *args])


def test_pacs_echo_and_store_over_tls(tls_pacs: TlsPacs, pki: Pki, dataset: DataSet) -> None:
    node = f"PACS@127.0.0.1:{tls_pacs.tls_port}"
    tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
    out = pacs_cli("echo", node, *tls)
    assert out.returncode == 0 and "0x0000" in out.stdout, out.stdout + out.stderr
    inst = dataset.studies[-1].instances[0]
    out = pacs_cli("store", node, *tls, str(inst.path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 stored" in out.stdout
    assert instance_path(tls_pacs.pacs.objects_dir, inst).exists()
    refused = pacs_cli("echo", node, "--tls", "+cf", str(pki.ca))  # no client certificate
    assert refused.returncode == 2, refused.stdout + refused.stderr


# -- association policy ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict(launch_module: Launcher) -> PacsProcess:
    """Allowlist on, at most 3 associations over 2 workers, 2 s network and 3 s ACSE timeouts,
    PDUs sent capped at 16 kB."""
    pacs = launch_module(workers=2, name="strict", env={
        "PACS_REQUIRE_KNOWN_CALLERS": "1", "PACS_MAX_ASSOCIATIONS": "3",
        "PACS_NETWORK_TIMEOUT": "2", "PACS_ACSE_TIMEOUT": "3", "PACS_MAX_SEND_PDU": "16384",
    })
    out = pacs_cli("nodes", "add", "KNOWN", "127.0.0.1", "104", "--data-dir", str(pacs.data_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    return pacs


def echo_as(dcmtk: Callable[[str], str], pacs: PacsProcess, calling: str) -> subprocess.CompletedProcess[str]:
    return run_tool([dcmtk("echoscu"), "-aet", calling, "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port)])


def associate(pacs: PacsProcess, calling: str = "KNOWN") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    return ae.associate("127.0.0.1", pacs.dimse_port, ae_title="PACS")


def close(*assocs: Association) -> None:
    for a in assocs:
        if a.is_established:
            a.release()
        a.ae.shutdown()


def test_an_unknown_calling_ae_is_rejected(strict: PacsProcess, dcmtk: Callable[[str], str]) -> None:
    out = echo_as(dcmtk, strict, "STRANGER")
    assert out.returncode != 0
    assert "Calling AE Title Not Recognized" in out.stdout + out.stderr, out.stdout + out.stderr
    assert echo_as(dcmtk, strict, "KNOWN").returncode == 0


def associate_once_free(pacs: PacsProcess, timeout: float = 30.0) -> Association:
    """An association, retried while the gateway still counts the previous test's (it counts an association
    until its connection is closed on its side, a moment after the client saw the release)."""
    deadline = time.monotonic() + timeout
    while True:
        assoc = associate(pacs)
        if assoc.is_established or time.monotonic() > deadline:
            return assoc
        assoc.ae.shutdown()
        time.sleep(0.2)


def test_the_association_over_the_limit_is_rejected(strict: PacsProcess, dcmtk: Callable[[str], str]) -> None:
    held = [associate_once_free(strict) for _ in range(3)]
    try:
        assert all(a.is_established for a in held)
        over = echo_as(dcmtk, strict, "KNOWN")
        assert over.returncode != 0
        assert "Local Limit Exceeded" in over.stdout + over.stderr, over.stdout + over.stderr
    finally:
        close(*held)
    wait_until(lambda: echo_as(dcmtk, strict, "KNOWN").returncode, lambda rc: rc == 0, timeout=60,
               what="an association once the three were released")


def _read_until_closed(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    out = b""
    while len(out) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize("kind", [0x04, 0x01])  # a P-DATA-TF, an A-ASSOCIATE-RQ
def test_a_huge_announced_pdu_is_aborted_unread(strict: PacsProcess, dcmtk: Callable[[str], str],
                                                 kind: int) -> None:
    with socket.create_connection(("127.0.0.1", strict.dimse_port), timeout=60) as sock:
        sock.sendall(struct.pack(">BBL", kind, 0, 0xFFFFFFF0))
        assert _read_until_closed(sock) == ABORT_INVALID_PDU
    assert echo_as(dcmtk, strict, "KNOWN").returncode == 0


def test_an_idle_socket_is_dropped_and_others_are_served(strict: PacsProcess,
                                                          dcmtk: Callable[[str], str]) -> None:
    with socket.create_connection(("127.0.0.1", strict.dimse_port), timeout=90) as idle:
        assert echo_as(dcmtk, strict, "KNOWN").returncode == 0  # served while the idle one is open
        assert _read_until_closed(idle) == b""  # closed by the gateway (ARTIM), not by this timeout


def test_a_trickling_peer_is_dropped(strict: PacsProcess, dcmtk: Callable[[str], str]) -> None:
    assoc = associate(strict)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.sendall(struct.pack(">BBL", 0x04, 0, 1000))  # a P-DATA-TF of 1000 bytes, one byte at a time
    deadline = time.monotonic() + 90
    dropped = False
    while time.monotonic() < deadline and not dropped:
        try:
            raw.sendall(b"\0")
        except OSError:
            dropped = True
            break
        dropped = not assoc.is_established
        time.sleep(0.25)
    assert dropped, "the gateway kept a peer that trickles one byte every 250 ms"
    close(assoc)
    assert echo_as(dcmtk, strict, "KNOWN").returncode == 0


def test_an_idle_association_is_aborted(strict: PacsProcess) -> None:
    assoc = associate(strict)
    assert assoc.is_established
    wait_until(lambda: assoc.is_aborted, bool, timeout=60, what="the gateway to abort an idle association")
    close(assoc)


def test_a_peer_announcing_no_pdu_limit_gets_capped_pdus(strict: PacsProcess, dataset: DataSet,
                                                         dcmtk: Callable[[str], str]) -> None:
    """A C-GET requestor announcing max PDU 0 ("unlimited") receives its instances (~0.5 MB each)
    in P-DATA-TF PDUs of at most PACS_MAX_SEND_PDU, and intact."""
    study = next(s for s in dataset.studies if native(s.instances))
    files = native(study.instances)
    out = run_tool([dcmtk("storescu"), "-aet", "KNOWN", "-aec", "PACS", "127.0.0.1", str(strict.dimse_port),
                    *(str(i.path) for i in files)])
    assert out.returncode == 0, out.stdout + out.stderr
    qido = Qido(strict)
    try:
        wait_until(lambda: len(qido.instances(study.uid)), lambda n: n >= len(files), timeout=60,
                   what="the stored instances to be indexed")
    finally:
        qido.close()
    sizes: list[int] = []
    received: dict[str, bytes] = {}

    def on_pdu(event: Any) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sizes.append(len(event.pdu.encode()) - 6)

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset(include_meta=False)
        return 0

    ae = AE(ae_title="KNOWN")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = sorted({i.sop_class_uid for i in files})
    for uid in classes:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", strict.dimse_port, ae_title="PACS", max_pdu=0,
                         ext_neg=[build_role(uid, scp_role=True) for uid in classes],
                         evt_handlers=[(evt.EVT_PDU_RECV, on_pdu), (evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.uid
    statuses = [int(st.Status) for st, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    close(assoc)
    assert statuses[-1] == 0, statuses
    assert set(received) >= {i.sop_uid for i in files}
    assert sizes and max(sizes) <= 16384, max(sizes)
    for inst in files:
        if inst.transfer_syntax == ExplicitVRLittleEndian:
            assert received[inst.sop_uid] == dataset_bytes(inst.path.read_bytes())
