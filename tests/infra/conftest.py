"""Synthesized templates for the infra tests: one synth per configuration, shared by the modules.

Every synth runs offline (no credentials, no Docker). Most use a tiny stand-in for the `pacs` layer
(context `layerDir`), so pip never runs; test_layer.py synthesizes once with the real layer build.
"""

from __future__ import annotations

import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from infra.app import build, cdk_json_context
from infra.stack import PacsStack

VPN = ["10.8.0.0/16", "172.20.0.0/16"]
CERT = "arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000000"
#: The "full" deployment the template and cdk-nag tests check: every optional part switched on.
FULL = {"stage": "test", "partition": "site-a", "vpnCidrs": ",".join(VPN), "retentionDays": "400",
        "lifecycleDays": "45", "tlsCertificateArn": CERT, "indexerConcurrency": "7",
        "callbackUrls": "https://viewer.example.org/callback"}


@dataclass
class Synth:
    app: App
    stack: PacsStack
    template: Template
    outdir: Path

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.template.find_resources(kind).items()}


def synthesize(tmp: Path, context: dict[str, Any], *, tiny_layer: bool = True) -> Synth:
    ctx = dict(context)
    if tiny_layer:
        layer = tmp / "tiny-layer" / "python" / "pacs"
        layer.mkdir(parents=True, exist_ok=True)
        (layer / "__init__.py").write_text('"""A stand-in for the pacs layer in infra tests."""\n')
        ctx["layerDir"] = str(tmp / "tiny-layer")
    outdir = tmp / "cdk.out"
    app = App(context=cdk_json_context(ctx), outdir=str(outdir))
    stack = build(app)
    template = Template.from_stack(stack)  # synthesizes (and runs the cdk-nag aspects)
    return Synth(app, stack, template, outdir)


SynthFactory = Callable[..., Synth]


@pytest.fixture(scope="session")
def full(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Cognito auth, TLS listener, custom partition and VPN CIDRs, cdk-nag on."""
    return synthesize(tmp_path_factory.mktemp("full"), FULL)
