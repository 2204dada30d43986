"""Query: studies, series and instances from the catalog, shaped as DICOM JSON for the caller.

Protocol-neutral: QIDO-RS parses its URL into a `QueryRequest`; C-FIND will parse an identifier
into the same. The matching itself lives in `pacs.catalog.matching`, shared by both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from pacs.catalog.matching import Condition, matches_all
from pacs.catalog.port import Catalog
from pacs.catalog.records import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    SOP_CLASSES_IN_STUDY,
    DicomJson,
    StudyRow,
)
from pacs.dicom.levels import SERIES_TAGS, STUDY_TAGS

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


#: Which level an attribute is matched at: study attributes and aggregates, series attributes and
#: their aggregate; anything else is an instance attribute.
STUDY_LEVEL = frozenset(f"{t:08X}" for t in STUDY_TAGS) | {
    MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY, NUMBER_OF_STUDY_RELATED_SERIES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
}
SERIES_LEVEL = frozenset(f"{t:08X}" for t in SERIES_TAGS) | {NUMBER_OF_SERIES_RELATED_INSTANCES}
#: Studies read per catalog call when a series or instance search spans studies.
STUDY_PAGE = 100


def split_conditions(
    conds: Sequence[Condition],
) -> tuple[list[Condition], list[Condition], list[Condition]]:
    """Conditions on study, series and instance attributes."""
    study = [c for c in conds if c.tag in STUDY_LEVEL]
    series = [c for c in conds if c.tag in SERIES_LEVEL]
    instance = [c for c in conds if c.tag not in STUDY_LEVEL and c.tag not in SERIES_LEVEL]
    return study, series, instance


class QueryService:
    def __init__(self, catalog: Catalog, partition: str = "default") -> None:
        self.catalog = catalog
        self.partition = partition

    def search(self, req: QueryRequest, retrieve_url: Callable[..., str] | None = None) -> QueryResult:
        """Run a query; `retrieve_url(study[, series[, instance]])` gives each result's RetrieveURL.

        Series and instance searches match each attribute at its own level: study attributes on the
        study, series attributes on the series, the rest on the instance. Across studies (`/series`,
        `/instances`) the matching studies are walked page by page, newest first.
        """
        if req.level is Level.STUDY:
            page = self.catalog.query_studies(
                self.partition, req.conditions, fuzzy=req.fuzzy, limit=req.limit, offset=req.offset
            )
            items = [r.to_dicom_json() for r in page.rows]
            urls: list[tuple[str, ...]] = [(r.study_uid,) for r in page.rows]
            truncated = page.truncated
        else:
            found: list[tuple[DicomJson, tuple[str, ...]]] = []
            truncated = False
            for match in self._series_or_instances(req):
                if req.limit is not None and len(found) >= req.offset + req.limit:
                    truncated = True  # one more than the page: there are further results
                    break
                found.append(match)
            items = [item for item, _ in found[req.offset:]]
            urls = [ids for _, ids in found[req.offset:]]
        if retrieve_url is not None:
            for item, args in zip(items, urls, strict=True):
                item[RETRIEVE_URL] = {"vr": "UR", "Value": [retrieve_url(*args)]}
        return QueryResult(items, truncated)

    def _studies(self, req: QueryRequest, conds: list[Condition]) -> Iterator[StudyRow]:
        if req.study_uid is not None:
            row = self.catalog.get_study(self.partition, req.study_uid)
            if row is not None and matches_all(row.to_dicom_json(), conds, fuzzy=req.fuzzy):
                yield row
            return
        offset = 0
        while True:
            page = self.catalog.query_studies(
                self.partition, conds, fuzzy=req.fuzzy, limit=STUDY_PAGE, offset=offset
            )
            yield from page.rows
            if not page.truncated:
                return
            offset += len(page.rows)

    def _series_or_instances(self, req: QueryRequest) -> Iterator[tuple[DicomJson, tuple[str, ...]]]:
        study_conds, series_conds, instance_conds = split_conditions(req.conditions)
        across = req.study_uid is None
        for study in self._studies(req, study_conds):
            series = self.catalog.query_series(self.partition, study.study_uid, series_conds, fuzzy=req.fuzzy)
            if req.level is Level.SERIES:
                for s in series.rows:
                    item = s.to_dicom_json()
                    if across:
                        item = {**study.to_dicom_json(), **item}
                    item.setdefault(STUDY_UID, {"vr": "UI", "Value": [study.study_uid]})
                    yield item, (study.study_uid, s.series_uid)
                continue
            for s in series.rows:
                if req.series_uid is not None and s.series_uid != req.series_uid:
                    continue
                rows = self.catalog.query_instances(
                    self.partition, study.study_uid, s.series_uid, instance_conds, fuzzy=req.fuzzy
                ).rows
                for r in rows:
                    item = self._select_instance(r.to_dicom_json(), req)
                    if across:
                        item = {**study.to_dicom_json(), **s.to_dicom_json(), **item}
                    item.setdefault(STUDY_UID, {"vr": "UI", "Value": [r.study_uid]})
                    item.setdefault(SERIES_UID, {"vr": "UI", "Value": [r.series_uid]})
                    item.setdefault(MODALITY, s.attrs.get(MODALITY, {"vr": "CS"}))
                    yield item, (r.study_uid, r.series_uid, r.sop_uid)

    @staticmethod
    def _select_instance(attrs: DicomJson, req: QueryRequest) -> DicomJson:
        if req.include is None:
            return attrs
        keep = DEFAULT_INSTANCE_TAGS | req.include | {c.tag for c in req.conditions}
        return {k: v for k, v in attrs.items() if k in keep}
