"""The transcoder service on the embedded backend: InstanceStored → derived copies + catalog rows,
idempotent, stale copies remade or dropped, corrupt originals refused for good, copies removed with
their instance (InstanceDeleted, DeleteService)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pacs.backends import Backend
from pacs.codecs import EncodeOptions
from pacs.events.embedded import EmbeddedEventLog
from pacs.services import index_worker
from pacs.services.delete import DeleteService
from pacs.services.derived import DerivedCopies, derived_key
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.services.transcode_policy import load_policy
from pacs.services.transcoder import PermanentFailure, TranscodeOutcome, TranscoderService

from tests.unit.conftest import MakePart10, build_dataset, to_part10

P = "default"
S = "1.2.826.0.1.3680043.8.498.21"
JLS, JLS_NEAR, RLE = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.5"
POLICY = ('{"rule": [{"name": "ct", "modalities": ["CT"], "copies": ["JPEGLSLossless", "RLELossless"]},'
          ' {"name": "preview", "min_bytes": 1, "copies": [{"syntax": "JPEGLSNearLossless", "near_lossless": 2}]}]}')


def index(backend: Backend) -> None:
    assert backend.queue is not None
    indexer = IndexerService(backend.store, backend.catalog, backend.events)
    while index_worker.drain_once(backend.queue, indexer):
        pass


def stored_events(backend: Backend, after: int = 0) -> list[tuple[int, str, dict[str, object]]]:
    assert isinstance(backend.events, EmbeddedEventLog)
    return [(e.id, e.detail_type, e.detail) for e in backend.events.read(after, 1000, ("InstanceStored", "InstanceDeleted"))]


def service(backend: Backend, policy: str = POLICY) -> TranscoderService:
    return TranscoderService(backend.store, backend.catalog, load_policy(policy))


def pixels(data: bytes) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(data)).pixel_array


def instance(sop: int, modality: str = "CT", **attrs: object) -> bytes:
    return to_part10(build_dataset(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.1", SOPInstanceUID=f"{S}.1.{sop}",
                                   Modality=modality, **attrs))


def test_stored_instance_gets_its_copies_once(embedded: Backend) -> None:
    original = instance(1)
    IngestService(embedded.store).ingest(original)
    index(embedded)
    [(_, kind, detail)] = stored_events(embedded)
    assert kind == "InstanceStored" and detail["modality"] == "CT"
    svc = service(embedded)
    report = svc.handle(kind, detail)
    assert report.outcome is TranscodeOutcome.DONE and report.made == 3
    expected = pixels(original)
    rows = embedded.catalog.list_derived(P, S)  # type: ignore[attr-defined]
    assert sorted((r.syntax, r.variant) for r in rows) == [(JLS, ""), (JLS_NEAR, "n2"), (RLE, "")]
    head = embedded.store.head(detail["key"])  # type: ignore[arg-type]
    assert head is not None
    for r in rows:
        assert r.source_etag == head.etag and r.key.startswith(f"{P}/derived/{S}/") and r.created
        copy = embedded.store.get(r.key)
        assert len(copy) == r.size
        ds = pydicom.dcmread(io.BytesIO(copy))
        assert ds.file_meta.TransferSyntaxUID == r.syntax
        if r.variant:
            assert np.abs(ds.pixel_array.astype(int) - expected).max() <= 2
        else:
            assert np.array_equal(ds.pixel_array, expected)  # lossless: bit-exact
    assert embedded.store.get(detail["key"]) == original  # never changes the original  # type: ignore[arg-type]
    # the same event again: nothing made, nothing rewritten
    before = {r.key: embedded.store.head(r.key) for r in rows}
    again = svc.handle(kind, detail)
    assert again.made == 0 and {c.outcome for c in again.copies} == {"exists"}
    assert {k: embedded.store.head(k) for k in before} == before
    assert len(embedded.catalog.list_derived(P, S)) == 3  # type: ignore[attr-defined]


def test_policy_filters_and_no_rule(embedded: Backend) -> None:
    IngestService(embedded.store).ingest(instance(2, modality="MR"))
    index(embedded)
    [(_, kind, detail)] = stored_events(embedded)
    only_ct = '{"rule": [{"modalities": ["CT"], "copies": ["RLELossless"]}]}'
    assert service(embedded, only_ct).handle(kind, detail).outcome is TranscodeOutcome.NO_RULE
    assert service(embedded, "").handle(kind, detail).outcome is TranscodeOutcome.NO_RULE
    # an event without `modality` (published before it was added): read from the original
    legacy = {k: v for k, v in detail.items() if k != "modality"}
    mr_rule = '{"rule": [{"modalities": ["MR"], "copies": ["RLELossless"]}]}'
    assert service(embedded, mr_rule).handle(kind, legacy).made == 1


def test_replaced_original_remakes_stale_copies_and_drops_unwanted(embedded: Backend) -> None:
    ingest = IngestService(embedded.store)
    ingest.ingest(instance(3))
    index(embedded)
    [(last, kind, first)] = stored_events(embedded)
    svc = service(embedded)
    svc.handle(kind, first)
    ingest.ingest(instance(3, PixelData=(np.arange(64, dtype=np.int16) * 3).tobytes()))  # replaced
    index(embedded)
    [(_, kind2, second)] = stored_events(embedded, last)
    assert second["replaced"] is True and second["etag"] != first["etag"]
    # the late, older event does nothing: the original changed since
    assert svc.handle(kind, first).outcome is TranscodeOutcome.SUPERSEDED
    narrower = service(embedded, '{"rule": [{"copies": ["JPEGLSLossless"]}]}')
    report = narrower.handle(kind2, second)
    assert sorted(c.outcome for c in report.copies) == ["dropped", "dropped", "remade"]
    [row] = embedded.catalog.list_derived(P, S)  # type: ignore[attr-defined]
    assert row.syntax == JLS and row.source_etag == second["etag"]
    assert np.array_equal(pixels(embedded.store.get(row.key)), np.arange(64, dtype=np.int16).reshape(8, 8) * 3)
    assert not list(embedded.store.list(f"{P}/derived/{S}/series/{S}.1/instances/{S}.1.3/ts/{RLE}"))


def test_corrupt_original_fails_for_good_with_the_reason(embedded: Backend) -> None:
    ds = build_dataset(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.1", SOPInstanceUID=f"{S}.1.4")
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01 not an RLE frame"])
    ds["PixelData"].VR = "OB"
    IngestService(embedded.store).ingest(to_part10(ds, RLE))
    index(embedded)
    [(_, kind, detail)] = stored_events(embedded)
    with pytest.raises(PermanentFailure, match="cannot decode the RLE Lossless pixel data"):
        service(embedded).handle(kind, detail)
    assert embedded.catalog.list_derived(P, S) == []  # type: ignore[attr-defined]


def test_malformed_event_is_permanent(embedded: Backend) -> None:
    with pytest.raises(PermanentFailure):
        service(embedded).handle("InstanceStored", {"partition": "default", "studyInstanceUID": "1/../2"})
    assert service(embedded).handle("StudyUpdated", {}).outcome is TranscodeOutcome.IGNORED


def test_copies_go_with_their_instance(embedded: Backend, make_part10: MakePart10) -> None:
    ingest = IngestService(embedded.store)
    for n in (5, 6):
        ingest.ingest(instance(n))
    index(embedded)
    svc = service(embedded)
    events = stored_events(embedded)
    for _, kind, detail in events:
        svc.handle(kind, detail)
    assert len(embedded.catalog.list_derived(P, S)) == 6  # type: ignore[attr-defined]
    deleter = DeleteService(embedded.store, IndexerService(embedded.store, embedded.catalog, embedded.events))
    deleter.delete(S, f"{S}.1", f"{S}.1.5")
    left = embedded.catalog.list_derived(P, S)  # type: ignore[attr-defined]
    assert {r.sop_uid for r in left} == {f"{S}.1.6"}
    assert not list(embedded.store.list(f"{P}/derived/{S}/series/{S}.1/instances/{S}.1.5/"))
    # InstanceDeleted (the indexer's removal path: the original deleted from the store directly)
    embedded.store.delete(f"{P}/studies/{S}/series/{S}.1/instances/{S}.1.6.dcm")
    index(embedded)
    deleted = [e for e in stored_events(embedded, events[-1][0]) if e[1] == "InstanceDeleted"]
    assert [d["sopInstanceUID"] for _, _, d in deleted] == [f"{S}.1.5", f"{S}.1.6"]
    for _, kind, detail in deleted:
        svc.handle(kind, detail)
    assert embedded.catalog.list_derived(P, S) == []  # type: ignore[attr-defined]
    assert not [b for b in embedded.store.list(f"{P}/derived/{S}/") if "/ts/" in b.key]


def test_derived_copies_on_demand_with_the_catalog(embedded: Backend) -> None:
    IngestService(embedded.store).ingest(instance(7))
    index(embedded)
    copies = DerivedCopies(embedded.store, P, embedded.catalog)
    sop = (S, f"{S}.1", f"{S}.1.7")
    assert copies.find(*sop, JLS) is None
    key = copies.make(*sop, JLS)
    assert key == derived_key(P, *sop, JLS) and copies.find(*sop, JLS) == key
    assert copies.make(*sop, JLS) == key
    assert embedded.catalog.get_derived(P, *sop, JLS).source_etag  # type: ignore[attr-defined]
    near = copies.make(*sop, JLS_NEAR, EncodeOptions(near_lossless=1))
    assert near.endswith(f"{JLS_NEAR}~n1.dcm") and copies.find(*sop, JLS_NEAR, EncodeOptions(near_lossless=1)) == near
    # without a catalog: the store alone says what exists (the DICOMweb path's original contract)
    bare = DerivedCopies(embedded.store, P)
    assert bare.find(*sop, JLS) == key and bare.find(*sop, RLE) is None


def test_htj2k_lossless_viewing_copy(embedded: Backend) -> None:
    """The design's example: an HTJ2K lossless copy of every CT (imagecodecs' encoder, in the dev set)."""
    original = instance(8)
    IngestService(embedded.store).ingest(original)
    index(embedded)
    [(_, kind, detail)] = stored_events(embedded)
    policy = '{"rule": [{"name": "viewing", "modalities": ["CT", "MR"], "copies": ["HTJ2KLossless"]}]}'
    report = service(embedded, policy).handle(kind, detail)
    [copy] = report.copies
    assert copy.outcome == "made" and copy.key.endswith("/ts/1.2.840.10008.1.2.4.201.dcm")
    ds = pydicom.dcmread(io.BytesIO(embedded.store.get(copy.key)))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.201"
    assert np.array_equal(ds.pixel_array, pixels(original))
