"""Context → PacsConfig: defaults that synthesize, and refusals of settings that cannot work."""

from __future__ import annotations

import pytest
from aws_cdk import App

from infra.config import PacsConfig


def config(**context: object) -> PacsConfig:
    return PacsConfig.from_context(App(context=context).node)


def test_defaults_are_a_dev_stage_with_cognito() -> None:
    c = config()
    assert (c.stage, c.partition, c.auth) == ("dev", "default", "cognito")
    assert c.retain_data and c.nag


def test_lists_and_flags_from_context_strings() -> None:
    c = config(vpnCidrs="10.8.0.0/16, 172.20.0.0/16", oidcAudience="a,b", auth="oidc",
               oidcIssuer="https://login.example.org/realms/pacs", retainData="false", retentionDays="30")
    assert c.vpn_cidrs == ("10.8.0.0/16", "172.20.0.0/16")
    assert c.oidc_audience == ("a", "b")
    assert not c.retain_data and c.retention_days == 30


@pytest.mark.parametrize("context, message", [
    ({"stage": "Prod_1"}, "stage"),
    ({"partition": "a/b"}, "partition"),
    ({"vpnCidrs": "10.200.1.0/24"}, "overlaps"),
    ({"vpnCidrs": "10.0.0.300/8"}, "does not appear to be an IPv4 or IPv6 network"),
    ({"auth": "oidc"}, "oidcIssuer"),
    ({"auth": "saml"}, "cognito or oidc"),
    ({"lifecycleDays": "-1"}, "positive"),
])
def test_refuses_settings_that_cannot_deploy(context: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**context)
