"""Absolute URLs that work: RetrieveURLs and BulkDataURIs carry the server's own port when the Host
header names none (dicomweb-client sends `Host: 127.0.0.1`), `Forwarded` / `X-Forwarded-*` count only
from PACS_TRUSTED_PROXIES, and PACS_PUBLIC_URL comes first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pacs.backends import Backend
from pydicom import dcmread
from pydicom.data import get_testdata_file
from starlette.requests import Request

from functions.dicomweb.app import create_app
from functions.dicomweb.urls import base_url
from tests.unit.live_server import serve

STOW = 'multipart/related; type="application/dicom"'


def request(headers: dict[str, str], *, peer: str = "192.0.2.7", server: tuple[str, int] = ("10.1.1.1", 8080),
            scheme: str = "http", root_path: str = "") -> Request:
    return Request({
        "type": "http", "method": "GET", "path": "/dicomweb/studies", "root_path": root_path,
        "scheme": scheme, "query_string": b"", "server": server, "client": (peer, 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    })


@pytest.mark.parametrize(("headers", "server", "scheme", "expected"), [
    ({"Host": "127.0.0.1"}, ("127.0.0.1", 8042), "http", "http://127.0.0.1:8042"),
    ({"Host": "127.0.0.1:9000"}, ("127.0.0.1", 8042), "http", "http://127.0.0.1:9000"),
    ({"Host": "pacs.example"}, ("0.0.0.0", 80), "http", "http://pacs.example"),
    ({"Host": "pacs.example"}, ("0.0.0.0", 443), "https", "https://pacs.example"),
    ({"Host": "[::1]"}, ("::1", 8042), "http", "http://[::1]:8042"),
    ({}, ("127.0.0.1", 8042), "http", "http://127.0.0.1:8042"),  # HTTP/1.0: no Host
    ({"Host": "evil/../x"}, ("127.0.0.1", 8042), "http", "http://127.0.0.1:8042"),  # not a host
])
def test_host_without_port_gets_the_servers_port(headers: dict[str, str], server: tuple[str, int], scheme: str,
                                                   expected: str) -> None:
    assert base_url(request(headers, server=server, scheme=scheme)) == expected


FORWARDED = {"Host": "10.1.1.1:8080", "Forwarded": 'for=198.51.100.1;proto=https;host="pacs.example.org", for=x'}
X_FORWARDED = {"Host": "10.1.1.1:8080", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org",
               "X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/imaging"}


@pytest.mark.parametrize(("headers", "trusted"), [
    (FORWARDED, "https://pacs.example.org"),
    (X_FORWARDED, "https://pacs.example.org:8443/imaging"),
])
def test_forwarded_headers_count_from_trusted_proxies_only(headers: dict[str, str], trusted: str) -> None:
    assert base_url(request(headers, peer="192.0.2.7")) == "http://10.1.1.1:8080"  # no proxy trusted
    assert base_url(request(headers, peer="192.0.2.7"), trusted_proxies="10.0.0.0/8") == "http://10.1.1.1:8080"
    assert base_url(request(headers, peer="10.2.3.4"), trusted_proxies="192.0.2.1, 10.0.0.0/8") == trusted


def test_public_url_comes_first() -> None:
    r = request(FORWARDED, peer="10.2.3.4")
    assert base_url(r, public_url="https://api.example/prod/", trusted_proxies="10.0.0.0/8") \
        == "https://api.example/prod"


@pytest.fixture
def ct_small() -> Any:
    return dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]


@pytest.fixture
def live(embedded: Backend) -> Iterator[tuple[int, Backend]]:
    with serve(create_app(embedded)) as port:
        yield port, embedded


def test_dicomweb_client_fetches_bulk_data_by_its_uris(live: tuple[int, Backend], ct_small: Any) -> None:
    """dicomweb-client sends `Host: 127.0.0.1` (no port): the BulkDataURIs it is given still work."""
    port, _ = live
    web = DICOMwebClient(url=f"http://127.0.0.1:{port}/dicomweb")
    (ref,) = web.store_instances([ct_small]).ReferencedSOPSequence
    assert ref.RetrieveURL.startswith(f"http://127.0.0.1:{port}/dicomweb/studies/")
    meta = web.retrieve_instance_metadata(ct_small.StudyInstanceUID, ct_small.SeriesInstanceUID,
                                          ct_small.SOPInstanceUID)
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"http://127.0.0.1:{port}/dicomweb/")
    (pixels,) = web.retrieve_bulkdata(uri)
    assert pixels == ct_small.PixelData


def stow(port: int, data: bytes, headers: dict[str, str]) -> str:
    boundary = "b0und4ry"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    r = requests.post(f"http://127.0.0.1:{port}/dicomweb/studies", data=body, timeout=30, headers={
        **headers, "Content-Type": f"{STOW}; boundary={boundary}", "Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text
    return str(r.json()["00081199"]["Value"][0]["00081190"]["Value"][0])


def test_forwarded_from_a_live_peer(embedded: Backend) -> None:
    """Over uvicorn (its own proxy-header handling off): a Forwarded header from 127.0.0.1 is ignored
    unless 127.0.0.1 is a trusted proxy; PACS_PUBLIC_URL wins over both."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    forwarded = {"Forwarded": "proto=https;host=pacs.example.org", "X-Forwarded-For": "203.0.113.9"}
    with serve(create_app(embedded)) as port:
        assert stow(port, data, forwarded).startswith(f"http://127.0.0.1:{port}/dicomweb/studies/")
    embedded.settings = dataclasses.replace(embedded.settings, trusted_proxies="127.0.0.1/32")
    with serve(create_app(embedded)) as port:
        assert stow(port, data, forwarded).startswith("https://pacs.example.org/dicomweb/studies/")
    embedded.settings = dataclasses.replace(embedded.settings, public_url="https://pacs.public.example/")
    with serve(create_app(embedded)) as port:
        assert stow(port, data, forwarded).startswith("https://pacs.public.example/dicomweb/studies/")
