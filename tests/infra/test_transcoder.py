"""The transcoder in the synthesized template: rule on InstanceStored/InstanceDeleted → SQS (with a DLQ)
→ function (partial batch failures) on its own layer; grants, alarms, the policy in its environment;
and its real layer (the library + imagecodecs) within Lambda's 250 MB unzipped limit."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra import assets
from infra.config import PacsConfig, policy_json
from infra.transcoder import DETAIL_TYPES
from tests.infra.conftest import FULL, Synth, synthesize
from tests.infra.functions_helpers import (
    LAMBDA_UNZIPPED_LIMIT,
    check_layer,
    function,
    logical_id,
    props,
    smoke,
)

POLICY = {"rule": [{"name": "ct", "modalities": ["CT", "MR"], "copies": ["JPEGLSLossless"]}]}


@pytest.fixture(scope="module")
def tc(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("transcoder"), {**FULL, "transcodePolicy": json.dumps(POLICY)})


def transcoder(synth: Synth) -> tuple[str, dict[str, Any]]:
    return function(synth, "functions.transcoder.handler.handler")


def test_rule_routes_instance_events_to_the_transcoder_queue(tc: Synth) -> None:
    queue = logical_id(tc, "Transcoder/Queue")
    tc.template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["pacs"], "detail-type": list(DETAIL_TYPES)},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [queue, "Arn"]},
                                       "DeadLetterConfig": Match.any_value(),
                                       "RetryPolicy": Match.any_value()})],
    })
    dlq = logical_id(tc, "Transcoder/Dlq")
    q = props(tc.resources("AWS::SQS::Queue")[queue])
    assert q["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}
    assert q["VisibilityTimeout"] == 1800 and "KmsMasterKeyId" in q


def test_function_on_its_own_layer_with_partial_batch_failures(tc: Synth) -> None:
    lid, fn = transcoder(tc)
    tc.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": lid}, "FunctionResponseTypes": ["ReportBatchItemFailures"], "BatchSize": 4})
    layer = logical_id(tc, "Transcoder/Layer")
    assert fn["Layers"] == [{"Ref": layer}]  # the library + imagecodecs; not the shared layer
    assert fn["Runtime"] == "python3.12" and fn["MemorySize"] == 3008 and fn["ReservedConcurrentExecutions"] == 10
    env = fn["Environment"]["Variables"]
    assert json.loads(env["PACS_TRANSCODE_POLICY"]) == POLICY
    assert env["PACS_TRANSCODE_DLQ_URL"] == {"Ref": logical_id(tc, "Transcoder/Dlq")}
    assert env["PACS_BACKEND"] == "aws" and "PACS_DERIVED_BUCKET" in env and "PACS_TABLE" in env


def test_grants_read_originals_write_derived_and_the_catalog(tc: Synth) -> None:
    _lid, fn = transcoder(tc)
    role = fn["Role"]["Fn::GetAtt"][0]
    docs = [props(p)["PolicyDocument"] for p in tc.resources("AWS::IAM::Policy").values()
            if {"Ref": role} in props(p)["Roles"]]
    actions = {a for d in docs for s in d["Statement"] for a in (s["Action"] if isinstance(s["Action"], list)
                                                                 else [s["Action"]])}
    assert {"s3:GetObject*", "s3:PutObject", "s3:DeleteObject*", "dynamodb:PutItem", "dynamodb:Query",
            "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"} <= actions
    originals = str(tc.stack.resolve(tc.stack.storage.originals.node.default_child.logical_id))  # type: ignore[union-attr]
    for d in docs:
        for s in d["Statement"]:
            acts = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            if any(a.startswith(("s3:Put", "s3:Delete")) for a in acts):
                assert originals not in json.dumps(s["Resource"]), "the transcoder never writes an original"


def test_alarms_on_its_dlq_and_errors(tc: Synth) -> None:
    descriptions = [props(a).get("AlarmDescription", "") for a in tc.resources("AWS::CloudWatch::Alarm").values()]
    assert any("TranscoderDlq dead-letter queue" in d for d in descriptions)
    assert any("Transcoder function errors" in d for d in descriptions)


def test_policy_context_from_json_toml_and_limits(tmp_path: Path) -> None:
    assert policy_json(None) == "" and json.loads(policy_json(POLICY)) == POLICY
    toml = tmp_path / "p.toml"
    toml.write_text('[[rule]]\nmodalities = ["CT"]\ncopies = ["RLELossless"]\n')
    assert json.loads(policy_json(str(toml))) == {"rule": [{"modalities": ["CT"], "copies": ["RLELossless"]}]}
    with pytest.raises(ValueError, match="rule"):
        policy_json('{"copies": []}')
    big = policy_json({"rule": [{"copies": ["RLELossless"], "sop_classes": ["1.2.3"] * 400}]})
    with pytest.raises(ValueError, match="4 KB"):
        PacsConfig(transcode_policy=big)


def test_full_deployment_has_the_transcoder_with_no_policy(full: Synth) -> None:
    _, fn = transcoder(full)
    assert fn["Environment"]["Variables"]["PACS_TRANSCODE_POLICY"] == ""


# -- the real layer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layer() -> Path:
    root, _ = assets.transcoder_layer()
    return root


def test_transcoder_layer_fits_lambdas_limit_with_imagecodecs_and_without_the_web_stack(layer: Path) -> None:
    check_layer(layer, ("pacs", "pydicom", "numpy", "imagecodecs", "openjpeg", "jpeg_ls", "pynamodb",
                        "aws_lambda_powertools", "orjson"),
                ("fastapi", "mangum", "pynetdicom", "rich", "uvicorn", "pylibjpeg_libjpeg"))


def test_shared_layer_requirements_leave_imagecodecs_out() -> None:
    builder = assets.layer_builder()
    shared = {builder._name(r) for r in builder.requirements()}
    mine = {builder._name(r) for r in builder.requirements(profile="transcoder")}
    assert "imagecodecs" not in shared and "imagecodecs" in mine
    assert "fastapi" in shared and "fastapi" not in mine


SMOKE = """
import json
import functions.transcoder.handler as h
import imagecodecs, numpy
from pacs.services.transcode_policy import load_policy
policy = load_policy('{"rule": [{"copies": ["JPEGLSLossless", "RLELossless"]}]}')
arr = numpy.arange(64, dtype=numpy.uint16).reshape(8, 8)
print(json.dumps({"rules": len(policy.rules), "htj2k": bool(imagecodecs.HTJ2K.available),
                  "roundtrip": bool((imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(arr)) == arr).all())}))
"""


def test_handler_imports_from_the_transcoder_layer_on_python312(layer: Path) -> None:
    assert smoke(layer, SMOKE) == {"rules": 1, "htj2k": True, "roundtrip": True}


def test_dicomweb_function_has_imagecodecs_for_encoding_on_the_fly(tc: Synth) -> None:
    [fn] = [props(r) for r in tc.resources("AWS::Lambda::Function").values()
            if props(r).get("Handler") == "functions.dicomweb.handler.handler"]
    assert fn["Layers"] == [{"Ref": logical_id(tc, "Functions/DicomWebLayer")}]
    root, _ = assets.dicomweb_layer()
    site = root / "python"
    for name in ("pacs", "imagecodecs", "fastapi", "mangum", "PIL", "openjpeg"):
        assert (site / name).is_dir(), name
    assert not (site / "pynetdicom").exists()
    assert assets.tree_size(root) + assets.tree_size(assets.functions_code()) < LAMBDA_UNZIPPED_LIMIT
    python = assets.layer_builder().python312()
    if python is None:
        return
    probe = "import functions.dicomweb.app, imagecodecs; print(imagecodecs.HTJ2K.available)"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PACS_BACKEND": "aws", "PACS_BUCKET": "b",
           "PACS_TABLE": "t", "PACS_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}
    paths = [str(assets.functions_code()), str(site)]
    done = subprocess.run([python, "-I", "-c", f"import sys; sys.path[:0] = {paths!r}\n{probe}"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), done.stderr[-3000:]
