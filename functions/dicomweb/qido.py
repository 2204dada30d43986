"""QIDO-RS (PS3.18 10.6): URL query parameters → a QueryRequest; results → application/dicom+json."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from fastapi import APIRouter, Request, Response
from pacs.catalog.matching import Condition, condition
from pacs.dicom.uids import check_uid
from pacs.services.query import Level, QueryRequest
from pydicom.datadict import tag_for_keyword

from functions.dicomweb.context import DICOM_JSON, BadRequest, dicomweb_url, services
from functions.dicomweb.wado import NotAcceptable, media_ranges

router = APIRouter()
#: Answers are DICOM JSON; a client that accepts none of these gets 406 (PS3.18 8.7).
_JSON = {"application/dicom+json", "application/json", "application/*", "*/*"}


def resolve_tag(key: str) -> str:
    """A keyword or an 8-digit hex tag as the upper-case hex key of DICOM JSON."""
    key = key.strip()
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        return key.upper()
    tag = tag_for_keyword(key)
    if tag is None:
        raise BadRequest(f"unknown attribute {key!r}")
    return f"{tag:08X}"


def _int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a non-negative integer, not {raw!r}") from None
    if value < 0:
        raise BadRequest(f"{name} must be a non-negative integer, not {raw!r}")
    return value


def parse_query(
    params: Sequence[tuple[str, str]], level: Level, study_uid: str | None = None,
    series_uid: str | None = None,
) -> QueryRequest:
    conditions: list[Condition] = []
    include: set[str] | None = set()
    limit: int | None = None
    offset = 0
    fuzzy = False
    for key, value in params:
        if key == "limit":
            limit = _int(key, value)
        elif key == "offset":
            offset = _int(key, value)
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadRequest("fuzzymatching must be true or false")
            fuzzy = value.lower() == "true"
        elif key == "accept":
            check_accept(value)
        elif key == "charset":
            if not {c.strip().lower() for c in value.split(",")} & {"utf-8", "utf8", "*"}:
                raise NotAcceptable(f"cannot answer in charset {value!r}: DICOM JSON is UTF-8")
        elif key == "includefield":
            for field in filter(None, (f.strip() for f in value.split(","))):
                if field == "all":
                    include = None
                elif include is not None:
                    include.add(resolve_tag(field))
        else:
            try:
                conditions.append(condition(key, value))
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
    return QueryRequest(
        level=level, conditions=conditions, study_uid=study_uid, series_uid=series_uid, fuzzy=fuzzy,
        limit=limit, offset=offset, include=frozenset(include) if include is not None else None,
    )


def check_accept(accept: str | None) -> None:
    """NotAcceptable unless `accept` (a header or the `accept` parameter) admits DICOM JSON."""
    if accept and not any(media in _JSON for media, _ in media_ranges(accept)):
        raise NotAcceptable(f"cannot answer {accept!r}: QIDO-RS answers application/dicom+json")


def _answer(request: Request, query: QueryRequest) -> Response:
    if "accept" not in request.query_params:  # the parameter, when given, overrides the header
        check_accept(request.headers.get("accept"))
    svc = services(request)
    base = dicomweb_url(request) + "/studies"

    def retrieve_url(*uids: str) -> str:
        parts = [base, uids[0]]
        if len(uids) > 1:
            parts += ["series", uids[1]]
        if len(uids) > 2:
            parts += ["instances", uids[2]]
        return "/".join(parts)

    result = svc.query.search(query, retrieve_url)
    if not result.items:
        return Response(status_code=204)
    headers = {}
    if result.truncated:
        host = request.url.hostname or "pacs"
        headers["Warning"] = f'299 {host}: "There are additional results that can be requested"'
    return Response(orjson.dumps(result.items, option=orjson.OPT_SORT_KEYS), media_type=DICOM_JSON,
                    headers=headers)


@router.get("/studies")
def search_studies(request: Request) -> Response:
    return _answer(request, parse_query(request.query_params.multi_items(), Level.STUDY))


@router.get("/series")
def search_all_series(request: Request) -> Response:
    return _answer(request, parse_query(request.query_params.multi_items(), Level.SERIES))


@router.get("/instances")
def search_all_instances(request: Request) -> Response:
    return _answer(request, parse_query(request.query_params.multi_items(), Level.IMAGE))


@router.get("/studies/{study}/series")
def search_series(request: Request, study: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    return _answer(request, parse_query(request.query_params.multi_items(), Level.SERIES, study))


@router.get("/studies/{study}/instances")
def search_study_instances(request: Request, study: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    return _answer(request, parse_query(request.query_params.multi_items(), Level.IMAGE, study))


@router.get("/studies/{study}/series/{series}/instances")
def search_instances(request: Request, study: str, series: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    return _answer(
        request, parse_query(request.query_params.multi_items(), Level.IMAGE, study, series)
    )
