"""SQLite catalog query plans: a study list reads the date index in answer order (no sort of the
whole catalog), and a search by PatientID, AccessionNumber, name or UID uses its own index.

The statements are the ones `query_studies` runs (captured with a trace callback), asked for their
plan with EXPLAIN QUERY PLAN. Found with bench/catalog_scale.py: a sort of every study (a temporary
B-tree) made the OHIF study list 30 % slower at 100,000 instances than at 1,300, and without
statistics SQLite answered `PatientID=` by scanning the primary key's `partition=?`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.catalog.matching import condition
from pacs.catalog.sqlite import SqliteCatalog


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqliteCatalog]:
    cat = SqliteCatalog(tmp_path / "catalog.db")
    yield cat
    cat.close()


def plan_of_query(catalog: SqliteCatalog, **keys: str) -> str:
    """The plan of the SELECT that query_studies runs for these keys."""
    db = catalog._db()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        catalog.query_studies("default", [condition(k, v) for k, v in keys.items()], limit=101)
    finally:
        db.set_trace_callback(None)
    (select,) = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    return "\n".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {select}"))


@pytest.mark.parametrize("keys", [{}, {"StudyDate": "20240101-20240131"}, {"StudyDescription": "CT*"}])
def test_study_lists_follow_the_date_index(catalog: SqliteCatalog, keys: dict[str, str]) -> None:
    plan = plan_of_query(catalog, **keys)
    assert "studies_date" in plan and "TEMP B-TREE" not in plan, plan


@pytest.mark.parametrize(
    ("keys", "index"),
    [({"PatientID": "P1"}, "studies_patient"), ({"AccessionNumber": "A1"}, "studies_accession"),
     ({"PatientName": "DOE*"}, "study_names"), ({"StudyInstanceUID": "1.2.3"}, "PRIMARY KEY"),
     ({"PatientID": "P1", "StudyDate": "20240101-"}, "studies_patient")],
)
def test_searches_use_their_selective_index(catalog: SqliteCatalog, keys: dict[str, str], index: str) -> None:
    plan = plan_of_query(catalog, **keys)
    assert index in plan and "USING INDEX studies_date" not in plan, plan
