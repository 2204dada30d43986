"""Customer-managed KMS keys: one for data (buckets, table, backups), one for messaging (queues, topic),
one for logs. The queue key is separate from the data key on purpose: S3 notifications to an encrypted
queue add a key-policy statement naming the bucket, and a bucket encrypted with that same key would
make a dependency cycle (key → bucket → key).
"""

from __future__ import annotations

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.config import PacsConfig


class Keys(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig) -> None:
        super().__init__(scope, cid)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY

        def key(name: str, description: str) -> kms.Key:
            return kms.Key(self, name, description=f"pacs-{config.stage}: {description}",
                           enable_key_rotation=True, removal_policy=removal)

        self.data = key("Data", "originals, derived data, exports, catalog, backups")
        self.messaging = key("Messaging", "SQS queues and the alarm topic")
        self.logs = key("Logs", "CloudWatch log groups")
        self.logs.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchLogs",
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                     "kms:Describe*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                    f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"}},
        ))
        # CloudWatch alarms publish to the encrypted alarm topic (the statement AWS documents for it; CDK
        # adds S3's and EventBridge's own statements when they are given encrypted queues).
        self.messaging.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarms",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],  # in a key policy, "*" is this key
        ))
