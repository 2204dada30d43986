"""The command-line side of the policy and the SCU: `pacs up` TLS flags into Settings, node and key
syntax of `pacs echo|store|find|move|get`, the TLS contexts they build."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import pytest
from pacs.catalog.nodes import RemoteNode
from pacs.catalog.nodes_sqlite import SqliteNodeRegistry
from pacs.cli.main import _settings
from pacs.cli.scu import files_of
from pacs.cli.up import add_arguments, add_tls_arguments
from pacs.config import Settings
from pacs.dimse.scu import ScuError, identifier, parse_keys, resolve_node
from pacs.dimse.tls import TLS12_CIPHERS, client_context, server_context


def test_pacs_up_tls_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PACS_TLS_CERT", "PACS_TLS_KEY", "PACS_TLS_CA", "PACS_TLS_PORT", "PACS_TLS_REQUIRE_CLIENT_CERT"):
        monkeypatch.delenv(var, raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    add_tls_arguments(parser)
    args = parser.parse_args(["--tls-cert", "s.pem", "--tls-key", "s.key", "--tls-ca", "ca.pem",
                              "--tls-port", "12762", "--tls-require-client-cert"])
    s = _settings(args)
    assert (s.tls_cert, s.tls_key, s.tls_ca, s.tls_port, s.tls_require_client_cert) == \
        ("s.pem", "s.key", "ca.pem", 12762, 1)
    defaults = _settings(parser.parse_args([]))
    assert (defaults.tls_cert, defaults.tls_port, defaults.tls_require_client_cert) == ("", 2762, 0)


def test_policy_settings_from_the_environment() -> None:
    s = Settings.from_env({"PACS_MAX_ASSOCIATIONS": "5", "PACS_NETWORK_TIMEOUT": "7",
                           "PACS_REQUIRE_KNOWN_CALLERS": "1", "PACS_MAX_SEND_PDU": "65536"})
    assert (s.max_associations, s.network_timeout, s.require_known_callers, s.max_send_pdu) == (5, 7, "1", 65536)


def test_node_forms(tmp_path: Path) -> None:
    assert resolve_node("STORESCP@10.0.0.5:104") == RemoteNode("STORESCP", "10.0.0.5", 104)
    assert resolve_node("host.example:11112").ae_title == "ANY-SCP"
    assert resolve_node("host.example:11112", called_ae="ARCHIVE").ae_title == "ARCHIVE"
    assert resolve_node("A@[::1]:104").host == "::1"
    registry = SqliteNodeRegistry(tmp_path / "catalog.db")
    registry.put_node(RemoteNode("ORTHANC", "127.0.0.1", 4242, tls=True))
    assert resolve_node("ORTHANC", registry) == RemoteNode("ORTHANC", "127.0.0.1", 4242, tls=True)
    with pytest.raises(ScuError, match="no such node"):
        resolve_node("MISSING", registry)
    with pytest.raises(ScuError, match="port out of range"):
        resolve_node("A@h:70000")


def test_keys_in_dcmtk_syntax() -> None:
    ds = parse_keys(["0010,0020=PAT*", "(0008,0020)=20240101-20241231", "PatientName", "StudyInstanceUID=",
                     "NumberOfStudyRelatedInstances=3"])
    assert ds.PatientID == "PAT*"
    assert ds.StudyDate == "20240101-20241231"
    assert ds["PatientName"].is_empty and ds["StudyInstanceUID"].is_empty  # return keys: zero length
    assert ds.NumberOfStudyRelatedInstances == 3
    for bad, why in (("NoSuchKeyword=1", "unknown keyword"), ("0009,0010=x", "data dictionary"),
                     ("ReferencedStudySequence", "sequence")):
        with pytest.raises(ScuError, match=why):
            parse_keys([bad])


def test_the_level_comes_from_l_or_a_key() -> None:
    assert identifier("study", []).QueryRetrieveLevel == "STUDY"
    assert identifier(None, ["QueryRetrieveLevel=SERIES"]).QueryRetrieveLevel == "SERIES"
    with pytest.raises(ScuError, match="no query/retrieve level"):
        identifier(None, ["PatientID=1"])
    with pytest.raises(ScuError, match="one of"):
        identifier("FRAME", [])


def test_files_of_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    for p in ("x.dcm", "a/y.dcm", "a/b/z.dcm"):
        (tmp_path / p).write_bytes(b"")
    assert [p.name for p in files_of([tmp_path], scan=True, recursive=False)] == ["x.dcm"]
    assert sorted(p.name for p in files_of([tmp_path], scan=False, recursive=True)) == ["x.dcm", "y.dcm", "z.dcm"]
    with pytest.raises(OSError, match=r"\+sd"):
        list(files_of([tmp_path], scan=False, recursive=False))


def test_tls_contexts_follow_the_profile() -> None:
    ctx = client_context(verify=False)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(TLS12_CIPHERS.split(":"))
    assert all("GCM" in name and name.startswith("ECDHE-") for name in tls12)
    with pytest.raises(ValueError, match="needs a CA"):
        server_context("cert.pem", "key.pem", None, require_client_cert=True)
