"""Catalog: the DynamoDB table exactly as `pacs.catalog.dynamodb` models it (tests compare the two).

    PK, SK (strings); sparse GSIs, every attribute projected:
    patient   PatientPK   / DateSK
    accession AccessionPK / DateSK
    name      NamePK      / NameSK
    date      DatePK      / DateSK

On-demand capacity, point-in-time recovery, the data key, deletion protection when data is retained,
and a daily AWS Backup plan (35 days) on top of PITR.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.config import PacsConfig
from infra.nag import Why, suppress

PARTITION_KEY, SORT_KEY = "PK", "SK"
#: index name → (partition key, sort key, projection): as pacs.catalog.dynamodb models them
GSIS: dict[str, tuple[str, str, dynamodb.ProjectionType]] = {
    "patient": ("PatientPK", "DateSK", dynamodb.ProjectionType.ALL),
    "accession": ("AccessionPK", "DateSK", dynamodb.ProjectionType.ALL),
    "name": ("NamePK", "NameSK", dynamodb.ProjectionType.ALL),
    "date": ("DatePK", "DateSK", dynamodb.ProjectionType.ALL),
    "sop": ("SopPK", "SK", dynamodb.ProjectionType.KEYS_ONLY),  # instances by SOP UID (commitment)
}


class Catalog(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, key: kms.IKey) -> None:
        super().__init__(scope, cid)
        string = dynamodb.AttributeType.STRING
        self.table = dynamodb.Table(
            self, "Table",
            partition_key=dynamodb.Attribute(name=PARTITION_KEY, type=string),
            sort_key=dynamodb.Attribute(name=SORT_KEY, type=string),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            deletion_protection=config.retain_data,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )
        for name, (pk, sk, projection) in GSIS.items():
            self.table.add_global_secondary_index(
                index_name=name,
                partition_key=dynamodb.Attribute(name=pk, type=string),
                sort_key=dynamodb.Attribute(name=sk, type=string),
                projection_type=projection,
            )
        vault = backup.BackupVault(
            self, "Vault", encryption_key=key,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )
        plan = backup.BackupPlan.daily35_day_retention(self, "Backups", vault)
        selection = plan.add_selection("Catalog",
                                       resources=[backup.BackupResource.from_dynamo_db_table(self.table)])
        suppress(selection, Why(
            "AwsSolutions-IAM4", "AWSBackupServiceRolePolicyForBackup is the policy AWS Backup documents for "
            "its service role; it can only back up the resources this selection names.",
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AWSBackupServiceRolePolicyForBackup"]))
