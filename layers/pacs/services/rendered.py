"""WADO-RS rendered and thumbnail resources: one frame of one instance, rendered (pacs.dicom.render).

A study or series is represented by one instance: the middle one by InstanceNumber of the series
(of a study: its first series by SeriesNumber that holds images). An instance is rendered by its
first frame. Only the header and the one frame are read from the object store. Whether a stored
syntax can be decoded is the codec registry's answer (`pacs.codecs.can_decode`); an instance stored in
one it cannot decode is rendered from a derived copy in one it can, when there is one.
"""

from __future__ import annotations

from pacs.catalog.records import InstanceRow
from pacs.codecs import can_decode, decodable
from pacs.codecs.registry import PREFERENCE
from pacs.dicom.frames import (
    MEDIA_TYPES,
    FramesUnavailable,
    encapsulated_frames,
    native_frames,
    read_layout,
)
from pacs.dicom.render import RenderOptions, render
from pacs.errors import NotFound
from pacs.services.derived import DerivedCopies
from pacs.services.frames import BadFrameList
from pacs.services.retrieve import RetrieveService

ROWS = "00280010"  # an instance with Rows in the catalog has pixel data to render


class RenderService:
    def __init__(self, retrieve: RetrieveService) -> None:
        self.retrieve = retrieve

    def instance(
        self, study: str, series: str, sop: str, options: RenderOptions, frame: int = 1
    ) -> bytes:
        """Frame `frame` (1-based) of an instance, rendered. Raises NotFound (also: no Pixel Data),
        BadFrameList, FramesUnavailable, BadRenderParameter."""
        (row,) = self.retrieve.instances(study, series, sop)
        return self.row(row, options, frame)

    def series(self, study: str, series: str, options: RenderOptions) -> bytes:
        """The middle image of a series (by InstanceNumber), rendered."""
        return self.row(self.representative(study, series), options)

    def study(self, study: str, options: RenderOptions) -> bytes:
        """The middle image of the study's first series (by SeriesNumber) holding images, rendered."""
        return self.row(self.representative(study), options)

    def representative(self, study: str, series: str | None = None) -> InstanceRow:
        """The instance that stands for a series, or for a study (its first series with images)."""
        retrieve = self.retrieve
        if series is not None:
            candidates = [series]
        else:
            page = retrieve.catalog.query_series(retrieve.partition, study, ())
            if not page.rows:
                raise NotFound("no such study")
            candidates = [s.series_uid for s in page.rows]
        for uid in candidates:
            rows = retrieve.instances(study, uid)  # by InstanceNumber, then UID
            images = [r for r in rows if ROWS in r.attrs] or (rows if series is not None else [])
            if images:
                return images[len(images) // 2]
        raise NotFound("the study has no images to render")

    def row(self, row: InstanceRow, options: RenderOptions, frame: int = 1) -> bytes:
        key = row.key
        if not can_decode(row.transfer_syntax_uid):
            key = self._decodable_copy(row) or key
        with self.retrieve.store.open(key) as fp:
            layout = read_layout(fp)
            if frame > layout.number_of_frames:
                raise BadFrameList(
                    f"frame {frame} is out of range: the instance has {layout.number_of_frames} frame(s)"
                )
            stored = layout.transfer_syntax_uid
            if layout.encapsulated:
                if stored not in MEDIA_TYPES or MEDIA_TYPES[stored].startswith("video/"):
                    raise FramesUnavailable(f"an instance stored as {stored} cannot be rendered")
                if not can_decode(stored):
                    raise FramesUnavailable(
                        f"cannot render pixel data stored as {stored}: no codec here decodes it")
                (data,) = encapsulated_frames(fp, layout, [frame])
            else:
                (data,) = native_frames(fp, layout, [frame])
        return render(layout, data, frame, options)

    def _decodable_copy(self, row: InstanceRow) -> str | None:
        """The key of a derived copy of `row` in a syntax the registry decodes, lossless first."""
        copies = DerivedCopies(self.retrieve.store, self.retrieve.partition, self.retrieve.catalog)
        for syntax in sorted(decodable(), key=lambda s: PREFERENCE.index(s) if s in PREFERENCE else 99):
            key = copies.find(row.study_uid, row.series_uid, row.sop_uid, syntax, source_etag=row.etag)
            if key is not None:
                return key
        return None
