"""Functions: the `pacs` layer and every handler of `functions/` from one code asset, on python3.12 in
the VPC's isolated subnets, with X-Ray, encrypted log groups with retention, and least-privilege grants.

    indexer    SQS (S3 notifications) → catalog + domain events; reserved concurrency protects the table
    reconcile  daily (EventBridge schedule, async): object store ↔ catalog diff and repair; a DLQ
    dicomweb   API Gateway → FastAPI through Mangum (sync); its own layer (the shared one + imagecodecs)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import AssetHashType, Aws, CfnElement, Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import assets
from infra.config import PacsConfig
from infra.nag import GRANT_WILDCARDS, Why, grant_findings, suppress
from infra.network import retention
from infra.pipeline import INDEXER_TIMEOUT

RUNTIME = lambda_.Runtime.PYTHON_3_12
#: Above this, WADO-RS answers 303 to a pre-packed body (Lambda returns at most 6 MB of base64 JSON).
MAX_INLINE_RESPONSE = 4_194_304
METRICS_NAMESPACE = "PACS"

_RUNTIME_WHY = Why(
    "AwsSolutions-L1",
    "python3.12 on purpose: the layer's wheels are built for cp312 on Amazon Linux 2023 "
    "(FIELD-NOTES §1d); moving to a newer runtime is a layer rebuild, done deliberately.",
)
_MANAGED = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
#: The managed policies every VPC function's role gets from CDK.
_LAMBDA_POLICIES = (f"{_MANAGED}AWSLambdaBasicExecutionRole", f"{_MANAGED}AWSLambdaVPCAccessExecutionRole")


@dataclass(frozen=True, slots=True)
class Resources:
    """What the functions work on."""

    originals: s3.IBucket
    derived: s3.IBucket
    table: dynamodb.ITable
    bus: events.IEventBus
    ingest: sqs.IQueue
    ingest_dlq: sqs.IQueue
    data_key: kms.IKey
    logs_key: kms.IKey


def pacs_environment(config: PacsConfig, r: Resources) -> dict[str, str]:
    """The `PACS_*` settings every AWS component reads (pacs.config.Settings)."""
    return {
        "PACS_BACKEND": "aws",
        "PACS_BUCKET": r.originals.bucket_name,
        "PACS_DERIVED_BUCKET": r.derived.bucket_name,
        "PACS_TABLE": r.table.table_name,
        "PACS_EVENT_BUS": r.bus.event_bus_name,
        "PACS_PARTITION": config.partition,
        "PACS_REGION": Aws.REGION,
    }


class Functions(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, vpc: ec2.IVpc,
                 subnets: ec2.SubnetSelection, resources: Resources) -> None:
        super().__init__(scope, cid)
        self.config, self.r = config, resources
        self.vpc, self.subnets = vpc, subnets
        self.layer = layer_version(
            self, "PacsLayer", config.layer_dir, assets.pacs_layer,
            "pacs library + pydicom, codecs (no GPL), pynamodb, FastAPI, Mangum, Powertools")
        #: The DICOMweb function's: the shared layer's packages plus imagecodecs (transcoding on the fly
        #: to HTJ2K or JPEG baseline), without the DIMSE stack; 250 MB leaves no room for both in one.
        self.web_layer = layer_version(
            self, "DicomWebLayer", config.layer_dir, assets.dicomweb_layer,
            "pacs library + pydicom, codecs, imagecodecs (no GPL), FastAPI, Mangum, Powertools")
        self.code = lambda_.Code.from_asset(str(assets.functions_code()))
        self.security_group = ec2.SecurityGroup(
            self, "FunctionsSg", vpc=vpc, allow_all_outbound=False,
            description="PACS functions: HTTPS out to AWS endpoints, nothing in")
        # Isolated subnets have no route to the internet: HTTPS reaches the interface endpoints (VPC
        # addresses) and the S3/DynamoDB gateway endpoints (AWS public prefixes, routed by the VPC).
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS endpoints")
        r = resources
        env = pacs_environment(config, r)

        # indexer: SQS batch → catalog; events to the bus.
        self.indexer = self.function(
            "Indexer", "indexer", env, timeout=INDEXER_TIMEOUT, memory=1024,
            reserved=config.indexer_concurrency)
        self.indexer.add_event_source(sources.SqsEventSource(
            r.ingest, batch_size=10, max_batching_window=Duration.seconds(5),
            report_batch_item_failures=True))
        r.originals.grant_read(self.indexer)
        r.derived.grant_read_write(self.indexer)
        r.table.grant_read_write_data(self.indexer)
        r.bus.grant_put_events_to(self.indexer)
        self._grants_why(self.indexer, read=[r.originals], write=[r.derived])
        suppress(self.indexer, Why(
            "HIPAA.Security-LambdaDLQ",
            "Invoked by an SQS event source mapping, never asynchronously: a failing message is retried and "
            "then moved to the ingest queue's DLQ (maxReceiveCount); a function DLQ would never receive.",
        ))

        # reconcile: scheduled, asynchronous: its own DLQ.
        self.reconcile_dlq = sqs.Queue(
            self, "ReconcileDlq", encryption=sqs.QueueEncryption.KMS, encryption_master_key=_messaging_key(r),
            enforce_ssl=True, retention_period=Duration.days(14))
        self.reconcile = self.function(
            "Reconcile", "reconcile",
            {**env, "PACS_QUEUE_URL": r.ingest.queue_url, "PACS_DLQ_URL": r.ingest_dlq.queue_url},
            timeout=Duration.minutes(15), memory=1024, reserved=1, dlq=self.reconcile_dlq)
        r.originals.grant_read(self.reconcile)
        r.derived.grant_read_write(self.reconcile)
        r.table.grant_read_write_data(self.reconcile)
        r.bus.grant_put_events_to(self.reconcile)
        self._grants_why(self.reconcile, read=[r.originals], write=[r.derived])

        # dicomweb: behind API Gateway.
        self.dicomweb = self.function(
            "DicomWeb", "dicomweb", {**env, "PACS_MAX_INLINE_RESPONSE": str(MAX_INLINE_RESPONSE)},
            timeout=Duration.seconds(29), memory=2048, reserved=None, layers=[self.web_layer])
        r.originals.grant_read_write(self.dicomweb)  # STOW-RS stores, DELETE removes
        r.derived.grant_read_write(self.dicomweb)  # metadata, pre-packed bodies; presigned GETs
        r.table.grant_read_write_data(self.dicomweb)
        r.bus.grant_put_events_to(self.dicomweb)
        self._grants_why(self.dicomweb, read=[], write=[r.originals, r.derived])
        suppress(
            self.dicomweb,
            Why("HIPAA.Security-LambdaDLQ",
                "Invoked synchronously by API Gateway only: the caller receives the error; nothing queues."),
            Why("HIPAA.Security-LambdaConcurrency",
                "Bounded by the API's stage throttling instead: reserving concurrency would take it from the "
                "account pool and cap viewers below the throttle."),
        )

    def grants_why(self, fn: lambda_.Function, *, read: list[s3.IBucket], write: list[s3.IBucket]) -> None:
        """Suppress the IAM5 findings of CDK's bucket and table grants to `fn`, named exactly."""
        self._grants_why(fn, read=read, write=write)

    def _grants_why(self, fn: lambda_.Function, *, read: list[s3.IBucket], write: list[s3.IBucket]) -> None:
        buckets = [_cfn(b) for b in (*read, *write)]
        suppress(fn, Why("AwsSolutions-IAM5", GRANT_WILDCARDS, applies_to=grant_findings(
            buckets=buckets, tables=[_cfn(self.r.table)], write=bool(write), delete=bool(write))))

    @property
    def all(self) -> list[lambda_.Function]:
        return [self.indexer, self.reconcile, self.dicomweb]

    def function(self, cid: str, name: str, env: dict[str, str], *, timeout: Duration, memory: int,
                 reserved: int | None, dlq: sqs.IQueue | None = None,
                 layers: list[lambda_.ILayerVersion] | None = None,
                 security_groups: Sequence[ec2.ISecurityGroup] = ()) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{cid}Logs", encryption_key=self.r.logs_key,
                                  retention=retention(self.config.retention_days))
        fn = lambda_.Function(
            self, cid,
            runtime=RUNTIME, architecture=lambda_.Architecture.X86_64,
            handler=f"functions.{name}.handler.handler", code=self.code,
            layers=[self.layer] if layers is None else layers,
            environment={
                **env,
                "POWERTOOLS_SERVICE_NAME": name,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
            timeout=timeout, memory_size=memory, reserved_concurrent_executions=reserved,
            tracing=lambda_.Tracing.ACTIVE, log_group=log_group,
            vpc=self.vpc, vpc_subnets=self.subnets, security_groups=[self.security_group, *security_groups],
            dead_letter_queue=dlq,
            description=f"pacs-{self.config.stage} {name}",
        )
        suppress(
            fn, _RUNTIME_WHY,
            Why("AwsSolutions-IAM4", "AWSLambdaBasicExecutionRole (write its own log streams) and "
                "AWSLambdaVPCAccessExecutionRole (the ENIs of a VPC function; network interfaces have no "
                "narrower resource): the minimum Lambda itself needs.", applies_to=_LAMBDA_POLICIES),
            Why("AwsSolutions-IAM5", "X-Ray trace submission has no resource-level permissions.",
                applies_to=["Resource::*"]),
        )
        return fn


def layer_version(scope: Construct, cid: str, layer_dir: str | None, build: Callable[[], tuple[Path, str]],
                  description: str) -> lambda_.LayerVersion:
    """A layer from its built asset (hashed by its content), or from the prebuilt folder tests pass."""
    if layer_dir:  # tests: a tiny stand-in
        code = lambda_.Code.from_asset(str(Path(layer_dir).resolve()))
    else:
        root, digest = build()
        code = lambda_.Code.from_asset(str(root), asset_hash=digest, asset_hash_type=AssetHashType.CUSTOM)
    return lambda_.LayerVersion(
        scope, cid, code=code, compatible_runtimes=[RUNTIME],
        compatible_architectures=[lambda_.Architecture.X86_64], description=description, license="Apache-2.0")


def _messaging_key(r: Resources) -> kms.IKey:
    key = r.ingest.encryption_master_key
    assert key is not None
    return key


def _cfn(resource: s3.IBucket | dynamodb.ITable) -> CfnElement:
    """The CloudFormation resource behind an L2 construct."""
    child = resource.node.default_child
    assert isinstance(child, CfnElement)
    return child
