"""The synthesized DynamoDB table and the pynamodb model of `pacs.catalog.dynamodb` cannot drift."""

from __future__ import annotations

from typing import Any

from pacs.catalog.dynamodb import DynamoCatalog

from tests.infra.conftest import Synth


def model_schema() -> dict[str, Any]:
    """The table the catalog adapter would create (pynamodb's own description of its model)."""
    return DynamoCatalog("unused")._m._get_schema()  # type: ignore[no-any-return]


def normalised_keys(key_schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((k["AttributeName"], k["KeyType"]) for k in key_schema)


def test_key_schema_and_attribute_types_match_the_model(full: Synth) -> None:
    (table,) = full.resources("AWS::DynamoDB::Table").values()
    p = table["Properties"]
    model = model_schema()
    assert normalised_keys(p["KeySchema"]) == normalised_keys(model["key_schema"]) == [("PK", "HASH"),
                                                                                       ("SK", "RANGE")]
    as_set = lambda defs: {(d["AttributeName"], d["AttributeType"]) for d in defs}  # noqa: E731
    assert as_set(p["AttributeDefinitions"]) == as_set(model["attribute_definitions"])


def test_every_gsi_matches_the_model(full: Synth) -> None:
    (table,) = full.resources("AWS::DynamoDB::Table").values()
    synthesized = {g["IndexName"]: (normalised_keys(g["KeySchema"]), g["Projection"]["ProjectionType"])
                   for g in table["Properties"]["GlobalSecondaryIndexes"]}
    modelled = {g["index_name"]: (normalised_keys(g["key_schema"]), g["projection"]["ProjectionType"])
                for g in model_schema()["global_secondary_indexes"]}
    assert synthesized == modelled
    assert set(synthesized) == {"patient", "accession", "name", "date", "sop"}
    assert not table["Properties"].get("LocalSecondaryIndexes") and not model_schema()["local_secondary_indexes"]
