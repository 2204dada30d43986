"""The PACS stack of one stage: every concern as a Construct, wired together."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from infra.anonymizer import Anonymizer
from infra.api import Api
from infra.catalog import Catalog
from infra.config import PacsConfig
from infra.functions import Functions, Resources
from infra.gateway import Gateway
from infra.keys import Keys
from infra.monitoring import Monitoring
from infra.nag import Why, suppress, suppress_path
from infra.network import Network
from infra.pipeline import Pipeline
from infra.stable import StudyStable
from infra.storage import Storage
from infra.transcoder import Transcoder


class PacsStack(Stack):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, **kwargs: Any) -> None:
        super().__init__(scope, cid, description=f"Serverless PACS ({config.stage})", **kwargs)
        Tags.of(self).add("project", "pacs")
        Tags.of(self).add("stage", config.stage)
        self.config = config
        self.keys = Keys(self, "Keys", config=config)
        self.network = Network(self, "Network", config=config, logs_key=self.keys.logs)
        self.storage = Storage(self, "Storage", config=config, key=self.keys.data)
        self.catalog = Catalog(self, "Catalog", config=config, key=self.keys.data)
        self.pipeline = Pipeline(self, "Pipeline", config=config, key=self.keys.messaging,
                                 originals=self.storage.originals)
        resources = Resources(
            originals=self.storage.originals, derived=self.storage.derived, table=self.catalog.table,
            bus=self.pipeline.bus, ingest=self.pipeline.ingest, ingest_dlq=self.pipeline.ingest_dlq,
            data_key=self.keys.data, logs_key=self.keys.logs,
        )
        vpc, subnets = self.network.vpc, self.network.subnets
        self.functions = Functions(self, "Functions", config=config, vpc=vpc, subnets=subnets,
                                   resources=resources)
        self.pipeline.schedule_reconcile(self.functions.reconcile)
        self.transcoder = Transcoder(self, "Transcoder", config=config, functions=self.functions,
                                     pipeline=self.pipeline)
        self.anonymizer = Anonymizer(self, "Anonymizer", config=config, functions=self.functions,
                                     pipeline=self.pipeline, exports=self.storage.exports,
                                     data_key=self.keys.data)
        self.stable = StudyStable(self, "StudyStable", config=config, functions=self.functions,
                                  pipeline=self.pipeline)
        self.api = Api(self, "Api", config=config, fn=self.functions.dicomweb, logs_key=self.keys.logs)
        self.gateway = Gateway(self, "Gateway", config=config, vpc=vpc, subnets=subnets, resources=resources,
                               logs_key=self.keys.logs, access_logs=self.storage.access_logs)
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, key=self.keys.messaging,
            dlqs={"IngestDlq": self.pipeline.ingest_dlq, "DownstreamDlq": self.pipeline.downstream_dlq,
                  "RuleDlq": self.pipeline.rule_dlq, "ReconcileDlq": self.functions.reconcile_dlq,
                  "TranscoderDlq": self.transcoder.dlq, "AnonymizerDlq": self.anonymizer.dlq,
                  "StableDlq": self.stable.dlq},
            functions=[*self.functions.all, self.transcoder.function, self.anonymizer.function,
                       self.stable.function],
            api=self.api.api,
            target_group=self.gateway.target_group,
        )
        CfnOutput(self, "GatewayDns", value=self.gateway.dns_name,
                  description="Internal NLB: point modalities here (port 11112; 2762 for TLS) over the VPN")
        CfnOutput(self, "OriginalsBucket", value=self.storage.originals.bucket_name)
        CfnOutput(self, "CatalogTable", value=self.catalog.table.table_name)
        CfnOutput(self, "EventBus", value=self.pipeline.bus.event_bus_name)
        CfnOutput(self, "IngestDlqUrl", value=self.pipeline.ingest_dlq.queue_url)
        CfnOutput(self, "ExportsBucket", value=self.storage.exports.bucket_name)
        CfnOutput(self, "AnonymizerDlqUrl", value=self.anonymizer.dlq.queue_url)
        self._suppress_cdk_internals()
        suppress(self, Why(
            "HIPAA.Security-IAMNoInlinePolicy",
            "Each role's permissions are CDK grants rendered as that role's own policy, scoped to this "
            "stack's resources; managed policies shared between roles would widen, not narrow, access.",
        ))

    def _suppress_cdk_internals(self) -> None:
        """Findings on resources CDK creates itself, which we do not configure."""
        handler = "/".join((self.node.path, "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"))
        suppress_path(self, handler, Why(
            "AwsSolutions-IAM4",
            "CDK's BucketNotificationsHandler (a deploy-time custom resource that only calls "
            "s3:PutBucketNotification) writes its logs with AWSLambdaBasicExecutionRole; it holds no data.",
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
        ))
