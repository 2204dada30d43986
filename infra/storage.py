"""Storage: buckets for originals, derived data, exports and server-access logs.

All of them block public access, refuse plain HTTP, are versioned and log their accesses (the log
bucket itself excepted). Originals and derived data are encrypted with the data key (S3 Bucket Keys on,
so KMS is called per bucket key rather than per object); access logs use SSE-S3, the only encryption
S3 server-access logging can write to.

Key layout (DESIGN.md): originals `{partition}/studies/...`, derived `{partition}/derived/...`.
Pre-packed WADO-RS bodies live at `{partition}/derived/{study}/packed/{digest}.multipart`: the study
UID sits between the prefix and `packed/`, and lifecycle filters take no wildcard, so the 1-day expiry
matches objects tagged `TRANSIENT_TAG` under `{partition}/derived/` (the packer must tag its uploads).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import PacsConfig
from infra.nag import Why, suppress

#: The tag (key, value) that marks derived objects safe to expire after a day (pre-packed bodies).
TRANSIENT_TAG = ("pacs-lifecycle", "transient")
TRANSIENT_DAYS = 1
ABORT_MULTIPART_DAYS = 7
#: A browser viewer follows WADO-RS's 303 to a presigned GET of a pre-packed body in the derived
#: bucket. A cross-origin redirect makes the request's origin opaque ("null"), so any origin may read;
#: the presigned signature (minutes) is the authorization, and only GET/HEAD are allowed.
PRESIGNED_GET_CORS = s3.CorsRule(
    allowed_methods=[s3.HttpMethods.GET, s3.HttpMethods.HEAD], allowed_origins=["*"],
    allowed_headers=["Range", "Accept", "Accept-Encoding"],
    exposed_headers=["Content-Type", "Content-Length", "Content-Range", "ETag"], max_age=3600)


class Storage(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, key: kms.IKey) -> None:
        super().__init__(scope, cid)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY
        p = config.partition
        common = dict(
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal,
        )
        abort = s3.LifecycleRule(id="abort-incomplete-multipart",
                                 abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_DAYS))

        self.access_logs = s3.Bucket(
            self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, **common,  # type: ignore[arg-type]
            lifecycle_rules=[abort, s3.LifecycleRule(
                id="expire-logs", expiration=Duration.days(config.retention_days),
                noncurrent_version_expiration=Duration.days(1))],
        )
        suppress(
            self.access_logs,
            Why("HIPAA.Security-S3DefaultEncryptionKMS",
                "S3 server-access-log delivery only writes to SSE-S3 buckets; the logs hold no PHI bodies."),
            Why("HIPAA.Security-S3BucketReplicationEnabled",
                "Access logs are operational data kept for retentionDays; not replicated across regions."),
        )

        def data_bucket(name: str, log_prefix: str, rules: list[s3.LifecycleRule],
                        cors: list[s3.CorsRule] | None = None) -> s3.Bucket:
            bucket = s3.Bucket(
                self, name, encryption=s3.BucketEncryption.KMS, encryption_key=key, bucket_key_enabled=True,
                server_access_logs_bucket=self.access_logs, server_access_logs_prefix=log_prefix,
                lifecycle_rules=[abort, *rules], cors=cors, **common,  # type: ignore[arg-type]
            )
            suppress(bucket, Why(
                "HIPAA.Security-S3BucketReplicationEnabled",
                "Durability comes from S3 (11 nines), versioning and retention; cross-region replication "
                "needs a second region and key chosen by the deployer (a compliance choice, not a default).",
            ))
            return bucket

        glacier = s3.StorageClass.GLACIER_INSTANT_RETRIEVAL
        self.originals = data_bucket("Originals", "originals/", [s3.LifecycleRule(
            id="originals-to-glacier-ir",
            transitions=[s3.Transition(storage_class=glacier,
                                       transition_after=Duration.days(config.lifecycle_days))],
            noncurrent_version_transitions=[s3.NoncurrentVersionTransition(
                storage_class=glacier, transition_after=Duration.days(config.lifecycle_days))],
        )])
        self.derived = data_bucket("Derived", "derived/", [
            s3.LifecycleRule(
                id="packed-bodies-expire", prefix=f"{p}/derived/",
                tag_filters={TRANSIENT_TAG[0]: TRANSIENT_TAG[1]},
                expiration=Duration.days(TRANSIENT_DAYS),
            ),
            # Derived data is rebuilt from the originals: replaced versions need not be kept.
            s3.LifecycleRule(id="derived-noncurrent-expire", noncurrent_version_expiration=Duration.days(1)),
        ], cors=[PRESIGNED_GET_CORS])
        self.exports = data_bucket("Exports", "exports/", [s3.LifecycleRule(
            id="exports-noncurrent-expire", noncurrent_version_expiration=Duration.days(30))])
