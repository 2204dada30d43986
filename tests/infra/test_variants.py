"""Another deployment shape: an external OIDC issuer instead of Cognito, no TLS certificate (so no
2762 listener), data not retained (a throw-away stage). Still clean under cdk-nag."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Annotations, Match

from tests.infra.conftest import Synth, synthesize

ISSUER = "https://login.example.org/realms/pacs"


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("oidc"), {
        "stage": "scratch", "auth": "oidc", "oidcIssuer": ISSUER, "oidcAudience": "ohif,dicomweb",
        "retainData": "false", "corsOrigins": "https://viewer.example.org"})


def test_external_issuer_replaces_cognito(oidc: Synth) -> None:
    oidc.template.resource_count_is("AWS::Cognito::UserPool", 0)
    oidc.template.has_resource_properties("AWS::ApiGatewayV2::Authorizer", {
        "AuthorizerType": "JWT", "JwtConfiguration": {"Issuer": ISSUER, "Audience": ["ohif", "dicomweb"]}})
    oidc.template.has_resource_properties("AWS::ApiGatewayV2::Api", {
        "CorsConfiguration": Match.object_like({"AllowOrigins": ["https://viewer.example.org"]})})


def test_without_a_certificate_only_plain_dicom_is_exposed(oidc: Synth) -> None:
    listeners = oidc.resources("AWS::ElasticLoadBalancingV2::Listener")
    assert [r["Properties"]["Port"] for r in listeners.values()] == [11112]
    ports = {rule["FromPort"] for sg in oidc.resources("AWS::EC2::SecurityGroup").values()
             for rule in sg["Properties"].get("SecurityGroupIngress", []) if "CidrIp" in rule}
    assert 2762 not in ports


def test_throwaway_stage_deletes_its_data_on_stack_deletion(oidc: Synth) -> None:
    for kind in ("AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::KMS::Key"):
        for r in oidc.resources(kind).values():
            assert r["DeletionPolicy"] == "Delete", kind
    oidc.template.has_resource_properties("AWS::DynamoDB::Table", {"DeletionProtectionEnabled": False})
    oidc.template.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "LoadBalancerAttributes": Match.array_with([{"Key": "deletion_protection.enabled", "Value": "false"}])})


def test_default_partition_and_stage_names(oidc: Synth) -> None:
    oidc.template.has_resource_properties("AWS::Events::EventBus", {"Name": "pacs-scratch"})
    (notif,) = oidc.resources("Custom::S3BucketNotifications").values()
    for c in notif["Properties"]["NotificationConfiguration"]["QueueConfigurations"]:
        assert {"Name": "prefix", "Value": "default/studies/"} in c["Filter"]["Key"]["FilterRules"]


def test_no_unsuppressed_findings(oidc: Synth) -> None:
    pattern = Match.string_like_regexp(r"^(AwsSolutions-|HIPAA\.Security-|CdkNagValidationFailure)")
    annotations = Annotations.from_stack(oidc.stack)
    assert [m.id for m in (*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern))] == []
