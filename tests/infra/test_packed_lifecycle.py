"""The derived bucket's lifecycle rule expires exactly what the WADO-RS packer tags."""

from __future__ import annotations

from pacs.services.packed import TRANSIENT_TAGGING

from infra.storage import TRANSIENT_TAG
from tests.infra.conftest import Synth


def test_the_packer_tags_what_the_lifecycle_rule_expires(full: Synth) -> None:
    assert "=".join(TRANSIENT_TAG) == TRANSIENT_TAGGING
    rules = [r for b in full.resources("AWS::S3::Bucket").values()
             for r in b["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
             if r.get("TagFilters")]
    assert [(r["TagFilters"], r["ExpirationInDays"]) for r in rules] == [
        ([{"Key": TRANSIENT_TAG[0], "Value": TRANSIENT_TAG[1]}], 1)]
    assert rules[0]["Prefix"].endswith("/derived/")
