"""The web findings of the bad-input probe: polyglot preambles and amplifying frame lists.

- A Part 10 file whose 128-byte preamble holds an `MZ` (PE) or ELF header (CVE-2019-11687) is stored
  with a zeroed preamble, whatever the path (STOW-RS, C-STORE's in-memory and spooled ingest), so
  WADO-RS and WADO-URI never serve an executable back.
- `…/frames/1,1,1,…` is refused (400, naming the repeated frame); frames are streamed, read one by
  one as the body is sent.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend, ingest_service
from pacs.services.frames import BadFrameList, FrameService, parse_frame_list
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.services.retrieve import RetrieveService
from pydicom import dcmread
from pydicom.data import get_testdata_file

from functions.dicomweb import frames, wado_uri
from tests.unit.conftest import to_part10
from tests.unit.test_frames import multiframe, parts
from tests.unit.test_stow import CT, body, wado_parts, with_stow

PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 46 + b"\x80\x00\x00\x00"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 9
ZEROS = bytes(128)


def polyglot(header: bytes) -> bytes:
    """pydicom's CT_small.dcm (a real file) with `header` in its preamble."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    assert data[128:132] == b"DICM"
    return header + data[len(header):128] + data[128:]


@pytest.fixture
def client(embedded: Backend) -> Iterator[TestClient]:
    app = with_stow(embedded)
    for router, prefix in ((wado_uri.router, ""), (frames.router, "/dicomweb")):
        if not any(getattr(r, "endpoint", None) in {getattr(x, "endpoint", None) for x in router.routes}
                   for r in app.routes):
            app.include_router(router, prefix=prefix)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("header", [PE, ELF], ids=["MZ", "ELF"])
def test_a_polyglot_preamble_is_stored_and_served_zeroed(client: TestClient, header: bytes) -> None:
    data = polyglot(header)
    r = client.post("/dicomweb/studies", content=body(data), headers={"Content-Type": CT})
    assert r.status_code == 200, r.text
    ref = r.json()["00081199"]["Value"][0]
    url = ref["00081190"]["Value"][0].removeprefix("http://testserver")
    study, series, sop = url.split("/studies/")[1].split("/")[0::2]
    (served,) = wado_parts(client, url)
    assert served[:128] == ZEROS and served[128:] == data[128:]
    r = client.get(f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
                   "&contentType=application/dicom")
    assert r.status_code == 200
    assert r.content[:128] == ZEROS and r.content[128:] == data[128:]


def test_an_object_stored_before_is_served_with_a_zeroed_preamble(client: TestClient, embedded: Backend) -> None:
    """An object whose preamble was stored as received (before ingest zeroed it) is not served with it."""
    data = polyglot(PE)
    key = ingest_service(embedded, index=True).ingest(data).key
    embedded.store.put(key, data)  # as an older version stored it
    IndexerService(embedded.store, embedded.catalog).index(embedded.store.head(key), sequencer="F" * 20)  # type: ignore[arg-type]
    assert embedded.store.get(key)[:2] == b"MZ"
    ds = dcmread(io.BytesIO(data))
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    (served,) = wado_parts(client, f"/dicomweb/studies/{study}/series/{series}/instances/{sop}")
    assert served == ZEROS + data[128:]
    r = client.get(f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
                   "&contentType=application/dicom")
    assert r.content == ZEROS + data[128:]
    pieces = list(RetrieveService(embedded.store, embedded.catalog).chunks(
        RetrieveService(embedded.store, embedded.catalog).instances(study, series, sop)[0], chunk_size=50))
    assert b"".join(pieces) == ZEROS + data[128:]  # whatever the piece boundaries


def test_every_ingest_path_zeroes_the_preamble(embedded: Backend, tmp_path: Path) -> None:
    """In memory (C-STORE without spooling) and from a spool file (C-STORE spooled, STOW-RS); a
    re-sent polyglot of a stored instance is the identical instance, not a replacement."""
    data = polyglot(PE)
    ingest = IngestService(embedded.store)
    stored = ingest.ingest(memoryview(data))
    assert embedded.store.get(stored.key) == ZEROS + data[128:]
    spooled = tmp_path / "spooled.dcm"
    spooled.write_bytes(polyglot(ELF))
    assert ingest.ingest_file(spooled).outcome.value == "identical"
    assert embedded.store.get(stored.key) == ZEROS + data[128:]


def test_a_repeated_frame_is_refused() -> None:
    with pytest.raises(BadFrameList, match="frame 1 is listed more than once"):
        parse_frame_list(",".join(["1"] * 400))
    assert parse_frame_list("3,1,2") == [3, 1, 2]


def test_the_repeated_frame_url_is_400_with_its_reason(client: TestClient, embedded: Backend) -> None:
    ds, pixels = multiframe(n=3)
    h = ingest_service(embedded, index=True).ingest(to_part10(ds)).header
    url = f"/dicomweb/studies/{h.study_uid}/series/{h.series_uid}/instances/{h.sop_instance_uid}/frames"
    r = client.get(url + "/" + ",".join(["1"] * 400))
    assert r.status_code == 400
    assert r.json() == {"error": "frame 1 is listed more than once: ask for each frame once"}
    r = client.get(url + "/3,1")
    assert r.status_code == 200
    assert [p for _, p in parts(r)] == [pixels[2].tobytes(), pixels[0].tobytes()]


class _Counted:
    """A stored object's stream that counts the bytes read from it."""

    def __init__(self, fp: BinaryIO, counter: list[int]) -> None:
        self.fp, self.counter = fp, counter

    def read(self, n: int = -1) -> bytes:
        data = self.fp.read(n)
        self.counter[0] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fp.close()


def test_frames_are_read_as_they_are_sent(embedded: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """`FrameService.frames` reads the header and the first frame at once, every other frame only when
    the body reaches it: one frame in memory at a time, whatever the list."""
    ds, pixels = multiframe(n=6, rows=128)  # 32 KiB a frame
    h = ingest_service(embedded, index=True).ingest(to_part10(ds)).header
    counter = [0]
    store_open = embedded.store.open
    monkeypatch.setattr(embedded.store, "open", lambda key: _Counted(store_open(key), counter))
    service = FrameService(RetrieveService(embedded.store, embedded.catalog, embedded.settings.partition))
    frame = len(pixels[0].tobytes())
    result = service.frames(h.study_uid, h.series_uid, h.sop_instance_uid, [6, 1, 2, 3, 4, 5])
    assert frame <= counter[0] < 2 * frame
    assert next(result.frames) == pixels[5].tobytes()
    assert next(result.frames) == pixels[0].tobytes()
    assert counter[0] < 3 * frame
    assert list(result.frames) == [pixels[i].tobytes() for i in (1, 2, 3, 4)]
    assert counter[0] >= 6 * frame


def test_a_frame_beyond_short_pixel_data_is_400_before_streaming(client: TestClient, embedded: Backend) -> None:
    """Frames are streamed after the status line: a later frame the Pixel Data cannot hold is found
    before, not after the first frame went out (a truncated 200)."""
    ds, pixels = multiframe(n=3)
    ds.PixelData = pixels[:2].tobytes()  # two frames' worth for NumberOfFrames 3
    h = ingest_service(embedded, index=True).ingest(to_part10(ds)).header
    url = f"/dicomweb/studies/{h.study_uid}/series/{h.series_uid}/instances/{h.sop_instance_uid}/frames"
    assert [p for _, p in parts(client.get(url + "/1,2"))] == [pixels[0].tobytes(), pixels[1].tobytes()]
    r = client.get(url + "/1,3")
    assert r.status_code == 400 and "shorter than its frames need" in r.json()["error"]
