"""What an export job asks for (the JSON body of `POST /exports`), checked before a job is made.

    {"studies": ["1.2.3", ...],                          # a selection: any of these three, at least one
     "series": [{"study": "1.2.3", "series": "1.2.3.4"}],
     "query": {"PatientID": "P1", "StudyDate": "20240101-20241231", "Modality": "CT"},
     "profile": "basic", "options": ["retain-longitudinal-modified-dates"], "project": "trial-7",
     "destination": {"partition": "trial-7-deid"} | {"type": "zip"} | {"type": "files"} | {"node": "AE"}}

A query has QIDO-RS attribute filters (keywords or tags, matched by `pacs.catalog.matching`) on study
and series attributes; it selects series.
"""

from __future__ import annotations

from typing import Any

from pacs.catalog.matching import condition
from pacs.catalog.nodes import NodeRegistry
from pacs.deid import DeidError, Profile
from pacs.deid.crosswalk import check_project
from pacs.dicom.uids import check_uid
from pacs.errors import InvalidUID
from pacs.services.query import SERIES_LEVEL, STUDY_LEVEL
from pacs.storage.keys import check_partition

#: Explicit selections are bounded (a bigger one is a query).
MAX_LISTED = 10_000
_KEYS = {"studies", "series", "query", "profile", "options", "project", "destination", "crosswalk"}
_PROJECT_MAX = 64


class ExportRequestError(ValueError):
    """The request cannot be run; the message says why (HTTP 400)."""


def _uid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ExportRequestError(f"{what} must be a UID string, not {value!r}")
    try:
        return check_uid(value, what)
    except (InvalidUID, ValueError) as exc:
        raise ExportRequestError(str(exc)) from None


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise ExportRequestError(f"{key!r} must be a list")
    if len(value) > MAX_LISTED:
        raise ExportRequestError(f"{key!r} lists {len(value)} items, at most {MAX_LISTED}: use a query")
    return value


def _query(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ExportRequestError("'query' must be an object of QIDO-RS attribute filters (strings)")
    for key, text in value.items():
        try:
            cond = condition(key, text)
        except ValueError as exc:
            raise ExportRequestError(f"query: {exc}") from None
        if cond.tag not in STUDY_LEVEL and cond.tag not in SERIES_LEVEL:
            raise ExportRequestError(f"query: {key} is not a study or series attribute "
                                     "(a query selects series)")
    return dict(value)


def _destination(value: Any, source: str, nodes: NodeRegistry | None, allowed: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ExportRequestError("'destination' is required: {\"partition\": NAME}, {\"type\": \"zip\"}, "
                                 "{\"type\": \"files\"} or {\"node\": AE_TITLE}")
    if set(value) == {"partition"}:
        target = value["partition"]
        try:
            check_partition(target if isinstance(target, str) else "")
        except ValueError as exc:
            raise ExportRequestError(f"destination: {exc}") from None
        if target == source:
            raise ExportRequestError("destination: de-identified copies never go into the source partition")
        names = {p.strip() for p in allowed.split(",") if p.strip()}
        if "*" not in names and target not in names:
            raise ExportRequestError(f"destination: export jobs may not write into partition {target!r} "
                                     f"(PACS_EXPORT_PARTITIONS: {', '.join(sorted(names)) or 'none'})")
        return {"partition": target}
    if set(value) == {"type"} and value["type"] in ("zip", "files"):
        return {"type": value["type"]}
    if set(value) == {"node"} and isinstance(value["node"], str):
        ae = value["node"]
        if nodes is None or nodes.get_node(ae) is None:
            raise ExportRequestError(f"destination: no registered node {ae!r} (see `pacs nodes`)")
        return {"node": ae}
    raise ExportRequestError(f"destination {value!r}: use {{\"partition\": NAME}}, {{\"type\": \"zip\"}}, "
                             "{\"type\": \"files\"} or {\"node\": AE_TITLE}")


def parse_request(body: Any, *, source: str, nodes: NodeRegistry | None, partitions: str = "*"
                  ) -> dict[str, Any]:
    """The request, checked and normalised (what the job records); ExportRequestError naming the
    first problem."""
    if not isinstance(body, dict):
        raise ExportRequestError("the body must be a JSON object")
    unknown = set(body) - _KEYS
    if unknown:
        raise ExportRequestError(f"unknown field(s) {sorted(unknown)}: use {sorted(_KEYS)}")
    studies = [_uid(s, "StudyInstanceUID") for s in _list(body, "studies")]
    series: list[dict[str, str]] = []
    for item in _list(body, "series"):
        if not isinstance(item, dict) or set(item) != {"study", "series"}:
            raise ExportRequestError(f"series {item!r}: give {{\"study\": UID, \"series\": UID}}")
        series.append({"study": _uid(item["study"], "StudyInstanceUID"),
                       "series": _uid(item["series"], "SeriesInstanceUID")})
    query = _query(body["query"]) if "query" in body else None
    if not studies and not series and not query:
        raise ExportRequestError("nothing selected: give 'studies', 'series' or a 'query'")
    profile_text = body.get("profile", "basic")
    options = body.get("options", [])
    if not isinstance(profile_text, str) or not isinstance(options, list) \
            or not all(isinstance(o, str) for o in options):
        raise ExportRequestError("'profile' is a name and 'options' a list of option names")
    try:
        Profile.parse(profile_text, options)
    except ValueError as exc:
        raise ExportRequestError(str(exc)) from None
    project = body.get("project", "default")
    if not isinstance(project, str) or not project.strip() or len(project) > _PROJECT_MAX \
            or not project.isprintable():
        raise ExportRequestError(f"'project' must be a name of 1-{_PROJECT_MAX} printable characters")
    crosswalk = body.get("crosswalk", False)
    if not isinstance(crosswalk, bool):
        raise ExportRequestError("'crosswalk' is true or false")
    if crosswalk:
        try:
            check_project(project)
        except DeidError as exc:
            raise ExportRequestError(f"a crosswalk needs a project usable in a key: {exc}") from None
    out: dict[str, Any] = {"studies": studies, "series": series}
    if query:
        out["query"] = query
    out.update(profile=profile_text, options=sorted(o.strip() for o in options), project=project,
               destination=_destination(body.get("destination"), source, nodes, partitions),
               crosswalk=crosswalk)
    return out
