"""CDK entry point (`cdk.json`): `cdk synth` / `cdk deploy -c stage=prod -c vpnCidrs=… …`.

Synthesizes offline: no AWS credentials (the stack is environment-agnostic unless `account` and
`region` are given in context), no Docker (the layer is built with pip, the gateway image only by
`cdk deploy`), no context lookups. Run directly (`python infra/app.py`, as `make synth` does), it
prints each stack's resource count and fails when cdk-nag reports an unsuppressed finding; otherwise it
says that cdk-nag passed, with each pack's counts and the path of its CSV report.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (`python infra/app.py`): make `infra` importable
    sys.path.insert(0, str(ROOT))
# jsii warns at length (three times per process) that Debian's Node 20 is past its support date.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App, Environment  # noqa: E402
from aws_cdk.cx_api import CloudAssembly  # noqa: E402

from infra.config import PacsConfig  # noqa: E402
from infra.nag import PACKS, apply_packs, read_reports  # noqa: E402
from infra.stack import PacsStack  # noqa: E402


def build(app: App) -> PacsStack:
    """The stage's stack in `app`, configured by the app's context."""
    config = PacsConfig.from_context(app.node)
    env = None
    if config.account and config.region:
        env = Environment(account=config.account, region=config.region)
    stack = PacsStack(app, f"Pacs-{config.stage}", config=config, env=env)
    if config.nag:
        apply_packs(app)
    return stack


def report(assembly: CloudAssembly) -> int:
    """Print resource counts and unsuppressed cdk-nag findings; the number of findings."""
    findings = 0
    for stack in assembly.stacks:
        resources = stack.template.get("Resources", {})
        print(f"{stack.stack_name}: {len(resources)} resources -> {stack.template_full_path}")
        for message in stack.messages:
            text = str(message.entry.data)
            level = str(message.level.value).lower()
            if level in ("error", "warning") and text.startswith((*PACKS, "CdkNagValidation")):
                findings += 1
                print(f"  {level}: {message.id}: {text.splitlines()[0][:200]}")
    return findings


def cdk_json_context(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The context of `cdk.json` (stage defaults, feature flags), with `overrides` on top."""
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
    return {**context, **(overrides or {})}


def _argv_context(argv: list[str]) -> dict[str, Any]:
    """`-c key=value` pairs, as the CDK CLI takes them."""
    out: dict[str, Any] = {}
    for flag, pair in itertools.pairwise(argv):
        if flag in ("-c", "--context") and "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    if "CDK_CONTEXT_JSON" in os.environ or "CDK_OUTDIR" in os.environ:
        app = App()  # under the CDK CLI: it passes cdk.json's and -c context itself
    else:
        app = App(context=cdk_json_context(_argv_context(sys.argv[1:] if argv is None else argv)),
                  outdir=str(ROOT / "cdk.out"))
    stack = build(app)
    assembly = app.synth()
    findings = report(assembly)
    if findings:
        print(f"{findings} unsuppressed cdk-nag finding(s)", file=sys.stderr)
        return 1
    if not stack.config.nag:
        print("cdk-nag: not run (context nag=false)")
        return 0
    print(nag_summary(Path(assembly.directory)))
    return 0


def nag_summary(outdir: Path) -> str:
    """`cdk-nag passed` with each pack's counts, and where its report is."""
    lines = ["cdk-nag passed: no unsuppressed finding (each suppression carries its reason in infra/)"]
    for r in read_reports(outdir):
        counts = ", ".join(f"{n} {c.lower()}" for c, n in sorted(r.counts.items()))
        where = r.path.relative_to(Path.cwd()) if r.path.is_relative_to(Path.cwd()) else r.path
        lines.append(f"  {r.pack}: {counts} -> {where}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
