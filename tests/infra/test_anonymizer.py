"""The anonymizer in the synthesized template: rule on InstanceStored/StudyUpdated → SQS (with a DLQ) →
function (partial batch failures) on its own layer; the master secret; grants (originals read, writes on
the destination partitions only, exports, table, queue); the research partitions indexed; the DICOMweb
function's grants for export jobs; alarms; cdk-nag clean with rules; and its real layer within Lambda's
250 MB unzipped limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match

from infra import assets
from infra.anonymizer import DETAIL_TYPES
from infra.config import PacsConfig, rule_partitions, rules_json
from tests.infra.conftest import FULL, VPN, Synth, synthesize
from tests.infra.functions_helpers import check_layer, function, logical_id, props, smoke

RULES = {"rule": [
    {"name": "trial-7", "partitions": ["trial-7"], "calling_aes": ["RESEARCH_CT"],
     "destination": {"partition": "trial-7-deid"}},
    {"name": "site", "partitions": ["site-a"], "modalities": ["MR"], "destination": {"exports": True}},
]}


@pytest.fixture(scope="module")
def an(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("anonymizer"), {**FULL, "deidRules": json.dumps(RULES),
                                                              "exportPartitions": "research-deid"})


def statements(synth: Synth, fn: dict[str, Any]) -> list[dict[str, Any]]:
    role = fn["Role"]["Fn::GetAtt"][0]
    return [s for p in synth.resources("AWS::IAM::Policy").values() if {"Ref": role} in props(p)["Roles"]
            for s in props(p)["PolicyDocument"]["Statement"]]


def actions(s: dict[str, Any]) -> list[str]:
    return s["Action"] if isinstance(s["Action"], list) else [s["Action"]]


def test_rule_routes_instance_and_study_events_to_the_anonymizer_queue(an: Synth) -> None:
    queue = logical_id(an, "Anonymizer/Queue")
    an.template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["pacs"], "detail-type": list(DETAIL_TYPES)},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [queue, "Arn"]},
                                       "DeadLetterConfig": Match.any_value()})],
    })
    q = props(an.resources("AWS::SQS::Queue")[queue])
    assert q["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [logical_id(an, "Anonymizer/Dlq"), "Arn"]}
    assert q["VisibilityTimeout"] == 1800 and "KmsMasterKeyId" in q


def test_function_layer_environment_and_secret(an: Synth) -> None:
    lid, fn = function(an, "functions.anonymizer.handler.handler")
    an.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": lid}, "FunctionResponseTypes": ["ReportBatchItemFailures"], "BatchSize": 4})
    assert fn["Layers"] == [{"Ref": logical_id(an, "Anonymizer/Layer")}]
    assert fn["Runtime"] == "python3.12" and fn["ReservedConcurrentExecutions"] == 10
    env = fn["Environment"]["Variables"]
    assert json.loads(env["PACS_DEID_RULES"]) == RULES
    secret = logical_id(an, "Anonymizer/Secret")
    assert env["PACS_DEID_SECRET"] == {"Ref": secret}
    assert env["PACS_ANONYMIZER_QUEUE_URL"] == {"Ref": logical_id(an, "Anonymizer/Queue")}
    assert env["PACS_ANONYMIZER_DLQ_URL"] == {"Ref": logical_id(an, "Anonymizer/Dlq")}
    assert env["PACS_EXPORTS_BUCKET"] == {"Ref": logical_id(an, "Storage/Exports")}
    s = props(an.resources("AWS::SecretsManager::Secret")[secret])
    assert s["KmsKeyId"] == {"Fn::GetAtt": [logical_id(an, "Keys/Data"), "Arn"]}
    assert s["GenerateSecretString"]["PasswordLength"] >= 32


def test_grants_never_write_a_source_partition(an: Synth) -> None:
    _, fn = function(an, "functions.anonymizer.handler.handler")
    found = statements(an, fn)
    every = {a for s in found for a in actions(s)}
    assert {"s3:GetObject*", "s3:PutObject", "dynamodb:PutItem", "events:PutEvents", "sqs:SendMessage",
            "secretsmanager:GetSecretValue", "kms:Decrypt"} <= every
    originals = logical_id(an, "Storage/Originals")
    writes = [s for s in found if any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for a in actions(s))
              and originals in json.dumps(s["Resource"])]
    assert writes and all("/trial-7-deid/*" in json.dumps(s["Resource"]) for s in writes), writes
    assert all("s3:Delete" not in json.dumps(actions(s)) for s in writes)


def test_research_partition_is_indexed(an: Synth) -> None:
    [notifications] = [props(r) for r in an.resources("Custom::S3BucketNotifications").values()
                       if "QueueConfigurations" in json.dumps(props(r))]
    prefixes = {rule["Value"] for c in notifications["NotificationConfiguration"]["QueueConfigurations"]
                for rule in c["Filter"]["Key"]["FilterRules"] if rule["Name"] == "prefix"}
    assert prefixes == {"site-a/studies/", "trial-7/studies/"}  # not the copies' partition


def test_dicomweb_may_queue_export_tasks_and_read_the_exports(an: Synth) -> None:
    _, fn = function(an, "functions.dicomweb.handler.handler")
    env = fn["Environment"]["Variables"]
    assert env["PACS_ANONYMIZER_QUEUE_URL"] == {"Ref": logical_id(an, "Anonymizer/Queue")}
    assert env["PACS_EXPORTS_BUCKET"] == {"Ref": logical_id(an, "Storage/Exports")}
    found = statements(an, fn)
    queue = logical_id(an, "Anonymizer/Queue")
    assert any("sqs:SendMessage" in actions(s) and queue in json.dumps(s["Resource"]) for s in found)
    exports = logical_id(an, "Storage/Exports")
    assert any("s3:GetObject*" in actions(s) and exports in json.dumps(s["Resource"]) for s in found)


def test_alarms_and_nag_clean_with_rules(an: Synth) -> None:
    descriptions = [props(a).get("AlarmDescription", "") for a in an.resources("AWS::CloudWatch::Alarm").values()]
    assert any("AnonymizerDlq dead-letter queue" in d for d in descriptions)
    assert any("Anonymizer function errors" in d for d in descriptions)
    pattern = Match.string_like_regexp(r"^(AwsSolutions-|HIPAA\.Security-)")
    annotations = Annotations.from_stack(an.stack)
    found = [m.id for m in (*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern))]
    assert found == []


def test_rules_context_and_limits(tmp_path: Path) -> None:
    text = rules_json(RULES)
    assert rule_partitions(text) == (("site-a", "trial-7"), ("trial-7-deid",))
    toml = tmp_path / "rules.toml"
    toml.write_text('[[rule]]\nname = "x"\npartitions = ["a"]\ndestination = { partition = "b" }\n')
    assert rule_partitions(rules_json(str(toml))) == (("a",), ("b",))
    with pytest.raises(ValueError, match="deidRules: a table with a `rule` list"):
        rules_json('{"partitions": []}')
    with pytest.raises(ValueError, match="not a valid partition"):
        PacsConfig(deid_rules=json.dumps({"rule": [{"partitions": ["../x"]}]}))
    with pytest.raises(ValueError, match="4 KB"):
        PacsConfig(deid_rules=json.dumps({"rule": [{"partitions": ["a"], "sop_classes": ["1.2.3"] * 400}]}))


def test_full_deployment_has_the_anonymizer_without_rules(full: Synth) -> None:
    _, fn = function(full, "functions.anonymizer.handler.handler")
    assert fn["Environment"]["Variables"]["PACS_DEID_RULES"] == ""


# -- the real layer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layer() -> Path:
    root, _ = assets.anonymizer_layer()
    return root


def test_anonymizer_layer_fits_lambdas_limit(layer: Path) -> None:
    check_layer(layer, ("pacs", "pydicom", "numpy", "imagecodecs", "openjpeg", "jpeg_ls", "pynetdicom",
                        "cryptography", "pynamodb", "aws_lambda_powertools", "orjson"),
                ("fastapi", "mangum", "starlette", "rich", "uvicorn", "pylibjpeg_libjpeg"))


SMOKE = """
import json
import functions.anonymizer.handler as h
from pacs.services.deid_rules import load_rules
from pacs.deid import Deidentifier, DeidSettings
import pynetdicom, imagecodecs
rules = load_rules('{"rule": [{"name": "r", "partitions": ["a"], "destination": {"exports": true}}]}')
print(json.dumps({"rules": len(rules.rules), "uid": Deidentifier(DeidSettings(key=b"k" * 32)).uid("1.2")[:5]}))
"""


def test_handler_imports_from_the_anonymizer_layer_on_python312(layer: Path) -> None:
    assert smoke(layer, SMOKE) == {"rules": 1, "uid": "2.25."}


def test_export_partitions_and_nodes_across_the_vpn(an: Synth) -> None:
    """Context exportPartitions: the anonymizer may write copies into those partitions too, besides the
    rules' destinations (and the API refuses any other: PACS_EXPORT_PARTITIONS, on both functions); its
    export nodes are reached across the VPN."""
    _, fn = function(an, "functions.anonymizer.handler.handler")
    assert fn["Environment"]["Variables"]["PACS_EXPORT_PARTITIONS"] == "research-deid,trial-7-deid"
    _, web = function(an, "functions.dicomweb.handler.handler")
    assert web["Environment"]["Variables"]["PACS_EXPORT_PARTITIONS"] == "research-deid,trial-7-deid"
    assert len(fn["VpcConfig"]["SecurityGroupIds"]) == 2
    an.template.has_resource_properties("AWS::EC2::SecurityGroup", {
        "GroupDescription": "anonymizer: C-STORE to export nodes across the VPN",
        "SecurityGroupEgress": Match.array_with([Match.object_like({"CidrIp": cidr, "IpProtocol": "tcp"})
                                                 for cidr in VPN])})
    puts = json.dumps([s for s in statements(an, fn) if "s3:PutObject" in actions(s)])
    assert "/research-deid/*" in puts and "/trial-7-deid/*" in puts
