"""cdk-nag AwsSolutions and HIPAA Security packs: zero unsuppressed findings on the full deployment,
and every suppression says why (scoped with appliesTo where the rule has granular findings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, CfnResource, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match

from infra.app import nag_summary, report
from infra.nag import apply_packs, read_reports
from tests.infra.conftest import Synth

#: Rules whose findings are granular (`Rule[finding]`): their suppressions must name the findings.
GRANULAR = {"AwsSolutions-IAM4", "AwsSolutions-IAM5"}


def findings(full: Synth) -> list[str]:
    annotations = Annotations.from_stack(full.stack)
    pattern = Match.string_like_regexp(r"^(AwsSolutions-|HIPAA\.Security-|CdkNagValidationFailure)")
    return [f"{m.id}: {str(m.entry.data).splitlines()[0][:160]}"
            for m in (*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern))]


def suppressions(full: Synth) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for c in full.stack.node.find_all():
        if isinstance(c, CfnResource):
            meta = c.get_metadata("cdk_nag") or {}
            out += [(c.node.path, s) for s in meta.get("rules_to_suppress", [])]
    return out


def test_both_packs_ran(full: Synth) -> None:
    reports = sorted(p.name for p in full.outdir.glob("*-NagReport.csv"))
    assert reports == ["AwsSolutions--Pacs-test-NagReport.csv", "HIPAA.Security--Pacs-test-NagReport.csv"]
    for name in reports:
        assert ',"Compliant",' in (full.outdir / name).read_text()


def test_no_unsuppressed_findings(full: Synth) -> None:
    assert findings(full) == []


def test_every_suppression_has_a_reason_and_granular_rules_are_scoped(full: Synth) -> None:
    found = suppressions(full)
    assert found
    for path, s in found:
        assert len(s["reason"]) >= 40, (path, s)
        if s["id"] in GRANULAR:
            assert s.get("applies_to"), (path, s["id"])


def test_suppressions_are_used(full: Synth) -> None:
    """A suppression for a rule that no longer fires is stale: every one matches a suppressed finding."""
    reports = "".join(p.read_text() for p in full.outdir.glob("*-NagReport.csv"))
    suppressed = {line.split(",")[0].strip('"') for line in reports.splitlines() if ',"Suppressed",' in line}
    declared = {s["id"] for _, s in suppressions(full)}
    assert declared <= suppressed, declared - suppressed


def test_make_synth_fails_on_an_unsuppressed_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python infra/app.py` (make synth) counts findings from the synthesized assembly and exits 1."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bad")
    s3.Bucket(stack, "Plain")  # no logging, no TLS-only policy, no KMS, no versioning
    apply_packs(app)
    assert report(app.synth()) > 0
    assert "AwsSolutions-S1" in capsys.readouterr().out


def test_the_full_deployment_reports_no_finding(full: Synth, capsys: pytest.CaptureFixture[str]) -> None:
    assert report(full.app.synth()) == 0
    assert "Pacs-test: " in capsys.readouterr().out


def test_make_synth_says_that_cdk_nag_passed_and_where_its_reports_are(full: Synth) -> None:
    reports = {r.pack: r for r in read_reports(full.outdir)}
    assert set(reports) == {"AwsSolutions", "HIPAA.Security"}
    for r in reports.values():
        assert r.counts["Compliant"] > 0 and r.counts["Suppressed"] > 0 and set(r.counts) == {"Compliant", "Suppressed"}
    text = nag_summary(full.outdir)
    assert text.startswith("cdk-nag passed: no unsuppressed finding")
    for r in reports.values():
        assert f"  {r.pack}: {r.counts['Compliant']} compliant, {r.counts['Suppressed']} suppressed -> " in text
        assert str(r.path.name) in text
