"""cdk-nag (2.x) helpers: the packs applied to the app, and suppressions that carry their reason.

Every suppression names the rule, says why it does not apply, and where the rule supports it
(`AwsSolutions-IAM5`, `AwsSolutions-IAM4`) is scoped with `appliesTo` to the exact findings.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Aspects, CfnElement, IAspect, Stack
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NagPackSuppression, NagSuppressions
from constructs import IConstruct

#: The rule families checked (annotations whose id starts with one of these are findings).
PACKS = ("AwsSolutions-", "HIPAA.Security-")


@dataclass(frozen=True, slots=True)
class Why:
    """One suppression: the rule, the reason, and (optionally) the exact findings it covers."""

    rule: str
    reason: str
    applies_to: Sequence[str] = field(default_factory=tuple)

    def to_nag(self) -> NagPackSuppression:
        if self.applies_to:
            return NagPackSuppression(id=self.rule, reason=self.reason, applies_to=list(self.applies_to))
        return NagPackSuppression(id=self.rule, reason=self.reason)


def suppress(construct: IConstruct, *whys: Why, children: bool = True) -> None:
    """Suppress findings on `construct` (and its children, e.g. a role's default policy)."""
    NagSuppressions.add_resource_suppressions(construct, [w.to_nag() for w in whys],
                                              apply_to_children=children)


def suppress_path(stack: Stack, path: str, *whys: Why) -> None:
    """Suppress findings on a construct CDK creates itself (a singleton custom-resource handler)."""
    NagSuppressions.add_resource_suppressions_by_path(stack, path, [w.to_nag() for w in whys],
                                                      apply_to_children=True)


def apply_packs(scope: IConstruct) -> list[IAspect]:
    """Check everything under `scope` with the AwsSolutions and HIPAA Security packs."""
    aspects: list[IAspect] = [AwsSolutionsChecks(verbose=True), HIPAASecurityChecks(verbose=True)]
    for aspect in aspects:
        Aspects.of(scope).add(aspect)
    return aspects


def arn_of(element: CfnElement) -> str:
    """How cdk-nag writes a reference to this resource's ARN in a finding (`<LogicalId.Arn>`)."""
    stack = Stack.of(element)
    return f"<{stack.resolve(element.logical_id)}.Arn>"


def grant_findings(*, buckets: Sequence[CfnElement] = (), tables: Sequence[CfnElement] = (),
                   write: bool = False, delete: bool = False, kms: bool = True) -> list[str]:
    """The IAM5 findings CDK's `grant_read`/`grant_read_write`/`grant_put` produce, named exactly."""
    found: list[str] = []
    if buckets:
        found += ["Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*"]
        found += [f"Resource::{arn_of(b)}/*" for b in buckets]
    if write:
        found += ["Action::s3:Abort*"]
    if delete:
        found += ["Action::s3:DeleteObject*"]
    if kms:
        found += ["Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"]
    found += [f"Resource::{arn_of(t)}/index/*" for t in tables]
    return found


#: Why the IAM5 findings of CDK's grants are acceptable (`grant_findings` names them exactly).
GRANT_WILDCARDS = (
    "CDK grant action families, each on this deployment's resources only: s3:GetObject*/List*/GetBucket* "
    "(object versions and tags, listing for reconciliation), s3:Abort*/DeleteObject* (multipart uploads, "
    "DELETE and replaced versions), kms:GenerateDataKey*/ReEncrypt* on the data key alone; `bucket/*` is the "
    "objects of that bucket, `table/index/*` the table's own GSIs (patient, accession, name, date)."
)


@dataclass(frozen=True, slots=True)
class NagReport:
    """One pack's CSV report of one stack (`<Pack>-<stack>-NagReport.csv`, written at synth)."""

    path: Path
    pack: str
    counts: dict[str, int]  # Compliance column ("Compliant", "Suppressed", "Non-Compliant"…) -> rows


def read_reports(outdir: Path) -> list[NagReport]:
    """The cdk-nag reports of a synthesized assembly, each with its rows counted by compliance."""
    reports = []
    for path in sorted(outdir.glob("*-NagReport.csv")):
        with path.open(newline="") as f:
            counts = Counter(row["Compliance"] for row in csv.DictReader(f))
        pack = next((p.rstrip("-") for p in PACKS if path.name.startswith(p)), path.name.split("-")[0])
        reports.append(NagReport(path, pack, dict(counts)))
    return reports
