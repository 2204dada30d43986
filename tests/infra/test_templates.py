"""The synthesized template of a full deployment: the properties the PACS promises, asserted on
CloudFormation (aws_cdk.assertions), not on our own constructs."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from infra.assets import ROOT
from infra.pipeline import DETAIL_TYPES, MAX_RECEIVE_COUNT
from infra.storage import TRANSIENT_TAG
from tests.infra.conftest import VPN, Synth

OUR_HANDLERS = {"functions.indexer.handler.handler", "functions.reconcile.handler.handler",
                "functions.dicomweb.handler.handler", "functions.transcoder.handler.handler",
                "functions.anonymizer.handler.handler", "functions.stable.handler.handler"}
#: Services whose actions touch stored data (objects, catalog items, keys, messages, events).
DATA_SERVICES = ("s3", "dynamodb", "kms", "sqs", "sns", "events")


def props(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties", {})  # type: ignore[no-any-return]


def our_functions(full: Synth) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in full.resources("AWS::Lambda::Function").items()
            if props(r).get("Handler") in OUR_HANDLERS}


def statements(full: Synth) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::Role"):
        for r in full.resources(kind).values():
            docs = [props(r).get("PolicyDocument")] + [p["PolicyDocument"] for p in props(r).get("Policies", [])]
            for doc in filter(None, docs):
                out += doc["Statement"]
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- encryption, public access, TLS -----------------------------------------------------------------


def test_every_bucket_is_encrypted_private_versioned_and_tls_only(full: Synth) -> None:
    buckets = full.resources("AWS::S3::Bucket")
    assert len(buckets) == 4  # originals, derived, exports, access logs
    kms = 0
    for b in buckets.values():
        p = props(b)
        rule = p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        kms += rule["SSEAlgorithm"] == "aws:kms"
        assert p["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}
        assert p["VersioningConfiguration"] == {"Status": "Enabled"}
    assert kms == 3  # the access-log bucket is SSE-S3: server-access logging cannot write SSE-KMS
    logged = [b for b in buckets.values() if "LoggingConfiguration" in props(b)]
    assert len(logged) == 3
    policies = full.resources("AWS::S3::BucketPolicy")
    tls_only = [p for p in policies.values() if any(
        s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in props(p)["PolicyDocument"]["Statement"])]
    assert len(tls_only) == 4


def test_every_queue_topic_table_and_log_group_is_encrypted_with_a_customer_key(full: Synth) -> None:
    keys = full.resources("AWS::KMS::Key")
    assert len(keys) == 3 and all(props(k)["EnableKeyRotation"] for k in keys.values())
    for q in full.resources("AWS::SQS::Queue").values():
        assert "KmsMasterKeyId" in props(q)
    for t in full.resources("AWS::SNS::Topic").values():
        assert "KmsMasterKeyId" in props(t)
    for g in full.resources("AWS::Logs::LogGroup").values():
        assert "KmsKeyId" in props(g)
    full.template.has_resource_properties("AWS::DynamoDB::Table", {
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()}})


def test_bucket_and_queue_keys_are_separate(full: Synth) -> None:
    """One key for both would make the key ↔ bucket dependency cycle of FIELD-NOTES §4."""
    bucket_keys = {json.dumps(props(b)["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
                              ["ServerSideEncryptionByDefault"].get("KMSMasterKeyID"))
                   for b in full.resources("AWS::S3::Bucket").values()} - {"null"}
    queue_keys = {json.dumps(props(q)["KmsMasterKeyId"]) for q in full.resources("AWS::SQS::Queue").values()}
    assert len(bucket_keys) == 1 and len(queue_keys) == 1 and not bucket_keys & queue_keys


def test_services_that_deliver_to_encrypted_queues_and_topic_may_use_the_messaging_key(full: Synth) -> None:
    """S3 notifications, EventBridge targets and CloudWatch alarms encrypt with the messaging key: without
    a key-policy statement for each, deliveries fail silently."""
    topic_key = next(iter(full.resources("AWS::SNS::Topic").values()))["Properties"]["KmsMasterKeyId"]
    key = full.resources("AWS::KMS::Key")[topic_key["Fn::GetAtt"][0]]
    services = {s["Principal"]["Service"] for s in props(key)["KeyPolicy"]["Statement"]
                if "Service" in s["Principal"] and "kms:GenerateDataKey*" in as_list(s["Action"])}
    assert {"s3.amazonaws.com", "events.amazonaws.com", "cloudwatch.amazonaws.com"} <= services


# -- lifecycle --------------------------------------------------------------------------------------


def rules_of(full: Synth, bucket_id_part: str) -> dict[str, dict[str, Any]]:
    (bucket,) = [b for k, b in full.resources("AWS::S3::Bucket").items() if bucket_id_part in k]
    return {r["Id"]: r for r in props(bucket)["LifecycleConfiguration"]["Rules"]}


def test_originals_move_to_glacier_ir_after_the_configured_days(full: Synth) -> None:
    rules = rules_of(full, "Originals")
    tier = rules["originals-to-glacier-ir"]
    assert tier["Transitions"] == [{"StorageClass": "GLACIER_IR", "TransitionInDays": 45}]
    assert tier["NoncurrentVersionTransitions"] == [{"StorageClass": "GLACIER_IR", "TransitionInDays": 45}]
    assert "ExpirationInDays" not in tier  # originals are never expired
    assert rules["abort-incomplete-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}


def test_every_bucket_expires_abandoned_multipart_uploads(full: Synth) -> None:
    for b in full.resources("AWS::S3::Bucket").values():
        assert any("AbortIncompleteMultipartUpload" in r for r in props(b)["LifecycleConfiguration"]["Rules"])


def test_packed_bodies_expire_after_a_day_and_nothing_else_derived_does(full: Synth) -> None:
    rules = rules_of(full, "Derived")
    packed = rules["packed-bodies-expire"]
    assert packed["ExpirationInDays"] == 1
    assert packed["Prefix"] == "site-a/derived/"
    assert packed["TagFilters"] == [{"Key": TRANSIENT_TAG[0], "Value": TRANSIENT_TAG[1]}]
    current_expiry = [r for r in rules.values() if "ExpirationInDays" in r]
    assert current_expiry == [packed]


def test_only_the_derived_bucket_answers_cross_origin_gets_of_presigned_bodies(full: Synth) -> None:
    cors = {k: props(b)["CorsConfiguration"] for k, b in full.resources("AWS::S3::Bucket").items()
            if "CorsConfiguration" in props(b)}
    (derived,) = cors
    assert derived.startswith("StorageDerived")
    (rule,) = cors[derived]["CorsRules"]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD"]


# -- catalog ----------------------------------------------------------------------------------------


def test_catalog_is_on_demand_with_pitr_deletion_protection_and_backups(full: Synth) -> None:
    full.template.has_resource_properties("AWS::DynamoDB::Table", {
        "BillingMode": "PAY_PER_REQUEST",
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "DeletionProtectionEnabled": True,
    })
    full.template.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Retain"})
    full.template.resource_count_is("AWS::Backup::BackupSelection", 1)


# -- pipeline ---------------------------------------------------------------------------------------


def test_originals_notify_the_ingest_queue_of_created_and_removed_dcm_under_the_partition(full: Synth) -> None:
    (notif,) = full.resources("Custom::S3BucketNotifications").values()
    configs = props(notif)["NotificationConfiguration"]["QueueConfigurations"]
    assert sorted(c["Events"][0] for c in configs) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    for c in configs:
        rules = {r["Name"]: r["Value"] for r in c["Filter"]["Key"]["FilterRules"]}
        assert rules == {"prefix": "site-a/studies/", "suffix": ".dcm"}
        assert c["QueueArn"]["Fn::GetAtt"][0].startswith("PipelineIngest")


def test_every_queue_has_a_dlq_or_is_one(full: Synth) -> None:
    queues = full.resources("AWS::SQS::Queue")
    dlq_ids = {props(q)["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
               for q in queues.values() if "RedrivePolicy" in props(q)}
    for key in ("PipelineIngest", "PipelineDownstream"):
        (queue,) = [q for k, q in queues.items() if k.startswith(key) and "Dlq" not in k]
        assert props(queue)["RedrivePolicy"]["maxReceiveCount"] == MAX_RECEIVE_COUNT
    # the rest are dead-letter queues: of a queue, of the async function, or of rule targets
    targets_dlqs = {t["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
                    for r in full.resources("AWS::Events::Rule").values() for t in props(r)["Targets"]}
    function_dlqs = {props(f)["DeadLetterConfig"]["TargetArn"]["Fn::GetAtt"][0]
                     for f in our_functions(full).values() if "DeadLetterConfig" in props(f)}
    for key, q in queues.items():
        assert "RedrivePolicy" in props(q) or key in dlq_ids | targets_dlqs | function_dlqs, key


def test_asynchronously_invoked_functions_have_a_dlq(full: Synth) -> None:
    functions = our_functions(full)
    async_invoked = {props(p)["FunctionName"]["Fn::GetAtt"][0]
                     for p in full.resources("AWS::Lambda::Permission").values()
                     if props(p)["Principal"] in ("events.amazonaws.com", "s3.amazonaws.com", "sns.amazonaws.com")}
    assert async_invoked == {k for k in functions if k.startswith("FunctionsReconcile")}
    for key in async_invoked:
        assert "DeadLetterConfig" in props(functions[key])


def test_indexer_reports_partial_batch_failures_with_reserved_concurrency(full: Synth) -> None:
    full.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("^PipelineIngest(?!Dlq)"), "Arn"]},
    })
    full.template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "functions.indexer.handler.handler", "ReservedConcurrentExecutions": 7})
    (indexer,) = [f for f in our_functions(full).values() if "indexer" in props(f)["Handler"]]
    (ingest,) = [q for k, q in full.resources("AWS::SQS::Queue").items()
                 if k.startswith("PipelineIngest") and "Dlq" not in k]
    assert props(ingest)["VisibilityTimeout"] >= 6 * props(indexer)["Timeout"]


def test_event_bus_archive_downstream_rule_and_daily_reconcile(full: Synth) -> None:
    full.template.has_resource_properties("AWS::Events::EventBus", {"Name": "pacs-test"})
    full.template.has_resource_properties("AWS::Events::Archive", {
        "EventPattern": {"source": ["pacs"]}, "RetentionDays": 400})
    full.template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["pacs"], "detail-type": list(DETAIL_TYPES)},
        "Targets": [Match.object_like({
            "Arn": {"Fn::GetAtt": [Match.string_like_regexp("^PipelineDownstream(?!Dlq)"), "Arn"]},
            "DeadLetterConfig": Match.any_value()})],
    })
    full.template.has_resource_properties("AWS::Events::Rule", {
        "ScheduleExpression": Match.string_like_regexp(r"^cron\(\d+ \d+ \* \* \? \*\)$"),
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [Match.string_like_regexp("^FunctionsReconcile"),
                                                               "Arn"]}})],
    })


# -- functions --------------------------------------------------------------------------------------


def test_functions_run_python312_in_the_vpc_traced_with_the_layer_and_pacs_environment(full: Synth) -> None:
    functions = our_functions(full)
    assert {props(f)["Handler"] for f in functions.values()} == OUR_HANDLERS
    for f in functions.values():
        p = props(f)
        assert p["Runtime"] == "python3.12"
        assert p["TracingConfig"] == {"Mode": "Active"}
        assert p["VpcConfig"]["SubnetIds"] and p["VpcConfig"]["SecurityGroupIds"]
        assert len(p["Layers"]) == 1
        env = p["Environment"]["Variables"]
        assert env["PACS_BACKEND"] == "aws" and env["PACS_PARTITION"] == "site-a"
        for name in ("PACS_BUCKET", "PACS_DERIVED_BUCKET", "PACS_TABLE", "PACS_EVENT_BUS", "PACS_REGION",
                     "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
            assert env[name], name
        assert env["PACS_BUCKET"] != env["PACS_DERIVED_BUCKET"]
    (dicomweb,) = [f for f in functions.values() if "dicomweb" in props(f)["Handler"]]
    assert props(dicomweb)["Environment"]["Variables"]["PACS_MAX_INLINE_RESPONSE"] == "4194304"
    assert props(dicomweb)["Timeout"] <= 29  # under the HTTP API's 30 s integration limit


def test_every_handler_module_in_functions_is_deployed_and_every_deployed_one_exists(full: Synth) -> None:
    on_disk = {f"functions.{p.parent.name}.handler.handler" for p in (ROOT / "functions").glob("*/handler.py")
               if "\nhandler = " in p.read_text() or "\ndef handler(" in p.read_text()}
    assert on_disk == OUR_HANDLERS


def test_all_functions_share_one_code_asset(full: Synth) -> None:
    codes = {json.dumps(props(f)["Code"], sort_keys=True) for f in our_functions(full).values()}
    assert len(codes) == 1


def test_log_groups_have_retention_and_every_function_logs_to_one(full: Synth) -> None:
    groups = full.resources("AWS::Logs::LogGroup")
    assert all(props(g)["RetentionInDays"] == 400 for g in groups.values())
    for f in our_functions(full).values():
        assert props(f)["LoggingConfig"]["LogGroup"]["Ref"] in groups


def test_no_wildcard_actions_and_no_wildcard_resources_on_data(full: Synth) -> None:
    for s in statements(full):
        actions = as_list(s.get("Action", []))
        for a in actions:
            assert a != "*" and not a.endswith(":*"), s
        data = [a for a in actions if a.split(":")[0] in DATA_SERVICES]
        if data and s["Effect"] == "Allow" and "Principal" not in s:
            # CDK's notification handler needs PutBucketNotification on "*" (it names the bucket per call)
            if data == ["s3:PutBucketNotification"]:
                continue
            assert "*" not in as_list(s.get("Resource", [])), s


DYNAMODB_WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def test_gateway_task_role_puts_objects_reads_the_catalog_and_writes_only_mpps_items(full: Synth) -> None:
    (task,) = full.resources("AWS::ECS::TaskDefinition").values()
    role = props(task)["TaskRoleArn"]["Fn::GetAtt"][0]
    actions: set[str] = set()
    for p in full.resources("AWS::IAM::Policy").values():
        if {"Ref": role} in props(p)["Roles"]:
            for s in props(p)["PolicyDocument"]["Statement"]:
                acts = set(as_list(s["Action"]))
                actions |= acts
                if acts & DYNAMODB_WRITES:  # only the partition's MPPS and commitment items
                    assert s["Condition"] == {"ForAllValues:StringEquals": {
                        "dynamodb:LeadingKeys": ["site-a#MPPS", "site-a#STGCMT"]}}
                    assert "dynamodb:DeleteItem" not in acts and "dynamodb:BatchWriteItem" not in acts
    assert {"s3:PutObject", "dynamodb:Query", "dynamodb:PutItem", "events:PutEvents"} <= actions
    assert not {a for a in actions if a.startswith("s3:Delete")}


# -- API --------------------------------------------------------------------------------------------


def test_http_api_has_a_jwt_authorizer_on_every_route_cors_throttling_and_access_logs(full: Synth) -> None:
    full.template.has_resource_properties("AWS::ApiGatewayV2::Authorizer", {
        "AuthorizerType": "JWT",
        "JwtConfiguration": {"Audience": [Match.any_value()], "Issuer": Match.any_value()},
    })
    for route in full.resources("AWS::ApiGatewayV2::Route").values():
        assert props(route)["AuthorizationType"] == "JWT"
    full.template.has_resource_properties("AWS::ApiGatewayV2::Api", {
        "ProtocolType": "HTTP", "CorsConfiguration": Match.object_like({"AllowOrigins": ["*"]})})
    full.template.has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "StageName": "$default", "AutoDeploy": True,
        "DefaultRouteSettings": {"ThrottlingRateLimit": Match.any_value(), "ThrottlingBurstLimit": Match.any_value()},
        "AccessLogSettings": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp("requestId")},
    })
    full.template.has_resource_properties("AWS::Cognito::UserPool", {"MfaConfiguration": "ON"})
    full.template.has_resource_properties("AWS::Cognito::UserPoolClient", {
        "CallbackURLs": ["https://viewer.example.org/callback"], "GenerateSecret": False,
        "AllowedOAuthFlows": ["code"]})


# -- network and gateway ----------------------------------------------------------------------------


def test_vpc_has_no_nat_no_internet_gateway_and_every_endpoint(full: Synth) -> None:
    for kind in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"):
        full.template.resource_count_is(kind, 0)
    endpoints = full.resources("AWS::EC2::VPCEndpoint").values()
    gateway = {json.dumps(props(e)["ServiceName"]) for e in endpoints if props(e).get("VpcEndpointType") != "Interface"}
    names = json.dumps([props(e)["ServiceName"] for e in endpoints])
    assert len(gateway) == 2 and "s3" in names and "dynamodb" in names
    for service in ("sqs", "ecr.api", "ecr.dkr", "logs", "kms", "events", "secretsmanager"):
        assert f".{service}" in names, service
    full.template.resource_count_is("AWS::EC2::FlowLog", 1)


def test_nlb_is_internal_with_dicom_and_tls_listeners_and_a_tcp_health_check(full: Synth) -> None:
    full.template.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "Scheme": "internal", "Type": "network",
        "LoadBalancerAttributes": Match.array_with([{"Key": "access_logs.s3.enabled", "Value": "true"}])})
    (lb,) = full.resources("AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert any(d.startswith("StorageAccessLogsPolicy") for d in lb["DependsOn"])
    listeners = {props(r)["Port"]: props(r) for r in full.resources("AWS::ElasticLoadBalancingV2::Listener").values()}
    assert sorted(listeners) == [2762, 11112]
    assert listeners[11112]["Protocol"] == "TCP"
    assert listeners[2762]["Protocol"] == "TLS" and listeners[2762]["Certificates"]
    full.template.has_resource_properties("AWS::ElasticLoadBalancingV2::TargetGroup", {
        "Port": 11112, "Protocol": "TCP", "TargetType": "ip", "HealthCheckProtocol": "TCP"})
    full.template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})})


def test_only_the_vpn_cidrs_reach_the_dicom_ports(full: Synth) -> None:
    from_cidrs: list[tuple[str, int]] = []
    for sg in full.resources("AWS::EC2::SecurityGroup").values():
        for rule in props(sg).get("SecurityGroupIngress", []):
            if "CidrIp" in rule:
                from_cidrs.append((rule["CidrIp"], rule["FromPort"]))
    dicom = sorted(r for r in from_cidrs if r[1] in (11112, 2762))
    assert dicom == sorted((cidr, port) for cidr in VPN for port in (11112, 2762))
    assert all(cidr != "0.0.0.0/0" for cidr, _ in from_cidrs)
    assert {port for _, port in from_cidrs} <= {11112, 2762, 443}
    # outbound DICOM goes to the VPN CIDRs only: the gateway's (C-MOVE destinations, commitment reports)
    # and the anonymizer's (export jobs to nodes)
    no_egress = "255.255.255.255/32"  # how CDK writes "no outbound rule" for a closed security group
    outbound = {props(sg)["GroupDescription"]: sorted(
        r["CidrIp"] for r in props(sg).get("SecurityGroupEgress", [])
        if r.get("FromPort") != 443 and r.get("CidrIp", no_egress) != no_egress)
        for sg in full.resources("AWS::EC2::SecurityGroup").values()}
    dicom_out = {what: cidrs for what, cidrs in outbound.items() if cidrs}
    assert list(dicom_out.values()) == [sorted(VPN)] * 2, dicom_out
    assert any("anonymizer" in what for what in dicom_out)


def test_gateway_image_is_a_docker_asset_synth_did_not_build(full: Synth) -> None:
    manifest = json.loads(next(full.outdir.glob("*.assets.json")).read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "gateway/Dockerfile"
    context = full.outdir / image["source"]["directory"]
    assert sorted(p.name for p in context.iterdir()) == ["README.md", "functions", "gateway", "layers",
                                                         "pyproject.toml"]


# -- monitoring -------------------------------------------------------------------------------------


def test_alarms_cover_dlqs_function_errors_throttles_api_5xx_and_unhealthy_gateway(full: Synth) -> None:
    alarms = [props(a) for a in full.resources("AWS::CloudWatch::Alarm").values()]
    metrics = sorted(a["MetricName"] for a in alarms)
    # ingest, downstream, rule, reconcile, transcoder, anonymizer, study-stable
    assert metrics.count("ApproximateNumberOfMessagesVisible") == 7
    assert metrics.count("Errors") == 6 and metrics.count("Throttles") == 6
    assert "5xx" in metrics and "UnHealthyHostCount" in metrics
    assert metrics.count("ObjectStoreErrors") == 3 and "IndexerLag" in metrics
    assert all(a["AlarmActions"] and (a["Threshold"] == 0 or a["MetricName"] == "IndexerLag") for a in alarms)
    full.template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_dashboard_shows_the_figures_the_handlers_emit_as_emf(full: Synth) -> None:
    """Each EMF metric the handlers print (`pacs.monitoring.metrics.EMF_NAMES`) and the gateway prints
    (`emf_reporter`) is on the dashboard, in namespace PACS with the `service` dimension of what prints
    it; store errors and the indexer's lag raise alarms."""
    from pacs.monitoring.metrics import EMF_NAMES

    from infra.monitoring import LAG_ALARM_MS, NAMESPACE, PACS_METRICS

    assert PACS_METRICS == EMF_NAMES
    (dashboard,) = full.resources("AWS::CloudWatch::Dashboard").values()
    body = props(dashboard)["DashboardBody"]
    text = "".join(p for p in body["Fn::Join"][1] if isinstance(p, str)) if isinstance(body, dict) else body
    emitted_by = {"InstancesStored": "dicomweb", "InstancesRefused": "dicomweb", "InstancesIndexed": "indexer",
                  "IndexedBytes": "indexer", "IndexingFailures": "indexer", "IndexerLag": "indexer",
                  "ObjectStoreErrors": "dicomweb"}
    assert set(emitted_by) == set(EMF_NAMES.values())
    for name, service in emitted_by.items():
        assert f'["{NAMESPACE}","{name}","service","{service}"' in text, name
    from pacs.monitoring.emf_reporter import GATEWAY_EMF, GATEWAY_EMF_GAUGES

    from infra.monitoring import GATEWAY_METRICS

    assert set(GATEWAY_METRICS) == set(GATEWAY_EMF) | set(GATEWAY_EMF_GAUGES)
    for name in GATEWAY_METRICS:
        assert f'["{NAMESPACE}","{name}","service","gateway"' in text, name
    alarms = {a["MetricName"]: a for a in map(props, full.resources("AWS::CloudWatch::Alarm").values())}
    assert alarms["IndexerLag"]["Threshold"] == LAG_ALARM_MS and alarms["IndexerLag"]["Statistic"] == "Maximum"
    assert alarms["ObjectStoreErrors"]["Namespace"] == NAMESPACE
