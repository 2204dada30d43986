"""The derived-copy records (`DerivedCatalog`), run against both adapters: SQLite and DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.catalog.port import DerivedCatalog
from pacs.catalog.records import DerivedCopyRow

from tests.unit.aws import fake_aws_credentials

P = "default"
ST, SE, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
JLS, RLE = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"


@pytest.fixture(params=["sqlite", "dynamodb"])
def records(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DerivedCatalog]:
    if request.param == "sqlite":
        from pacs.catalog.sqlite import SqliteCatalog

        catalog = SqliteCatalog(tmp_path / "catalog.db")
        yield catalog
        catalog.close()
        return
    import moto
    from pacs.catalog.dynamodb import DynamoCatalog

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        dynamo = DynamoCatalog("pacs-derived-test", create=True)
        yield dynamo
        dynamo.close()


def row(sop: str = SOP, syntax: str = JLS, variant: str = "", etag: str = "e1", series: str = SE) -> DerivedCopyRow:
    key = f"{P}/derived/{ST}/series/{series}/instances/{sop}/ts/{syntax}{'~' + variant if variant else ''}.dcm"
    return DerivedCopyRow(P, ST, series, sop, syntax, variant, key, 123, etag, "v1", "2026-12-07T00:00:00.000Z",
                          {"near_lossless": 2} if variant else {})


def test_put_is_conditional_on_the_source(records: DerivedCatalog) -> None:
    assert records.put_derived(row()) == "inserted"
    assert records.put_derived(row()) == "unchanged"  # the same event twice: one record
    assert records.put_derived(row(etag="e2")) == "replaced"  # made again from a new version
    got = records.get_derived(P, ST, SE, SOP, JLS)
    assert got == row(etag="e2")


def test_list_by_study_series_instance_and_remove(records: DerivedCatalog) -> None:
    for r in (row(), row(syntax=RLE), row(variant="n2", syntax="1.2.840.10008.1.2.4.81"),
              row(sop=SOP + ".2"), row(series=SE + ".9", sop=SOP + ".9")):
        records.put_derived(r)
    assert len(records.list_derived(P, ST)) == 5
    assert len(records.list_derived(P, ST, SE)) == 4
    mine = records.list_derived(P, ST, SE, SOP)
    assert sorted((r.syntax, r.variant) for r in mine) == sorted(
        [(JLS, ""), (RLE, ""), ("1.2.840.10008.1.2.4.81", "n2")])
    assert {r.options.get("near_lossless") for r in mine} == {None, 2}
    assert records.list_derived(P, "9.9") == []
    assert records.remove_derived(P, ST, SE, SOP, RLE)
    assert not records.remove_derived(P, ST, SE, SOP, RLE)
    assert records.get_derived(P, ST, SE, SOP, RLE) is None
    assert len(records.list_derived(P, ST, SE, SOP)) == 2
