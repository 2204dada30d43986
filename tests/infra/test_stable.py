"""Study-stable detection in the synthesized template: rule on StudyUpdated → SQS (with a DLQ) →
function (partial batch failures) that may send to its own queue (its timers) and put events on the bus;
alarms on its DLQ and errors; the quiet time in its environment."""

from __future__ import annotations

from aws_cdk.assertions import Match

from infra.stable import DETAIL_TYPES
from tests.infra.conftest import Synth
from tests.infra.functions_helpers import function, logical_id, props


def test_rule_queue_function_and_grants(full: Synth) -> None:
    queue = logical_id(full, "StudyStable/Queue")
    full.template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["pacs"], "detail-type": list(DETAIL_TYPES)},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [queue, "Arn"]}})],
    })
    lid, fn = function(full, "functions.stable.handler.handler")
    full.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": lid}, "FunctionResponseTypes": ["ReportBatchItemFailures"]})
    env = fn["Environment"]["Variables"]
    assert env["PACS_STABLE_QUEUE_URL"] == {"Ref": queue} and env["PACS_STUDY_QUIET_SECONDS"] == "60"
    role = fn["Role"]["Fn::GetAtt"][0]
    docs = [props(p)["PolicyDocument"] for p in full.resources("AWS::IAM::Policy").values()
            if {"Ref": role} in props(p)["Roles"]]
    actions = {a for d in docs for s in d["Statement"]
               for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert {"sqs:SendMessage", "events:PutEvents", "dynamodb:UpdateItem", "dynamodb:GetItem"} <= actions
    assert not any(a.startswith("s3:") for a in actions)
    descriptions = [props(a).get("AlarmDescription", "") for a in full.resources("AWS::CloudWatch::Alarm").values()]
    assert any("StableDlq dead-letter queue" in d for d in descriptions)
