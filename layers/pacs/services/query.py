"""Query: studies, series and instances from the catalog, shaped as DICOM JSON for the caller.

Protocol-neutral: QIDO-RS parses its URL into a `QueryRequest`; C-FIND will parse an identifier
into the same. The matching itself lives in `pacs.catalog.matching`, shared by both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pacs.catalog.matching import Condition
from pacs.catalog.port import Catalog
from pacs.catalog.records import DicomJson, QueryPage

RETRIEVE_URL = "00081190"
STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"


class Level(enum.StrEnum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


#: Instance attributes returned by default (PS3.18 Table 10.6.3-5), besides matched and included ones.
DEFAULT_INSTANCE_TAGS = frozenset({
    "00080016", "00080018", "00080056", "00080201", "00200013", "00280010", "00280011",
    "00280100", "00280008", "00083002", STUDY_UID, SERIES_UID, MODALITY,
})


@dataclass(frozen=True, slots=True)
class QueryRequest:
    level: Level
    conditions: Sequence[Condition] = ()
    study_uid: str | None = None
    series_uid: str | None = None
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    #: Extra attributes to return (tags), or None for all that are known.
    include: frozenset[str] | None = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class QueryResult:
    items: list[DicomJson]
    truncated: bool


class QueryService:
    def __init__(self, catalog: Catalog, partition: str = "default") -> None:
        self.catalog = catalog
        self.partition = partition

    def search(self, req: QueryRequest, retrieve_url: Callable[..., str] | None = None) -> QueryResult:
        """Run a query; `retrieve_url(study[, series])` gives the RetrieveURL of each result."""
        kw: dict[str, Any] = {"fuzzy": req.fuzzy, "limit": req.limit, "offset": req.offset}
        page: QueryPage[Any]
        urls: list[tuple[str, ...]]
        if req.level is Level.STUDY:
            page = self.catalog.query_studies(self.partition, req.conditions, **kw)
            items = [r.to_dicom_json() for r in page.rows]
            urls = [(r.study_uid,) for r in page.rows]
        elif req.level is Level.SERIES:
            if req.study_uid is None:
                raise ValueError("a series query needs a study")
            page = self.catalog.query_series(self.partition, req.study_uid, req.conditions, **kw)
            items = [self._with_uids(r.to_dicom_json(), r.study_uid) for r in page.rows]
            urls = [(r.study_uid, r.series_uid) for r in page.rows]
        else:
            if req.study_uid is None:
                raise ValueError("an instance query needs a study")
            page = self.catalog.query_instances(
                self.partition, req.study_uid, req.series_uid, req.conditions, **kw
            )
            items = [self._select_instance(r.to_dicom_json(), req) for r in page.rows]
            for item, r in zip(items, page.rows, strict=True):
                item.setdefault(STUDY_UID, {"vr": "UI", "Value": [r.study_uid]})
                item.setdefault(SERIES_UID, {"vr": "UI", "Value": [r.series_uid]})
            urls = [(r.study_uid, r.series_uid, r.sop_uid) for r in page.rows]
        if retrieve_url is not None:
            for item, args in zip(items, urls, strict=True):
                item[RETRIEVE_URL] = {"vr": "UR", "Value": [retrieve_url(*args)]}
        return QueryResult(items, page.truncated)

    @staticmethod
    def _with_uids(item: DicomJson, study_uid: str) -> DicomJson:
        item.setdefault(STUDY_UID, {"vr": "UI", "Value": [study_uid]})
        return item

    @staticmethod
    def _select_instance(attrs: DicomJson, req: QueryRequest) -> DicomJson:
        if req.include is None:
            return attrs
        keep = DEFAULT_INSTANCE_TAGS | req.include | {c.tag for c in req.conditions}
        return {k: v for k, v in attrs.items() if k in keep}
