"""Deployment settings from CDK context (`cdk deploy -c stage=prod -c vpnCidrs=10.8.0.0/16,…`).

Every value has a default that synthesizes; nothing is looked up in an AWS account.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from constructs import Node

Auth = Literal["cognito", "oidc"]
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # as pacs.storage.keys.check_partition


def _split(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(i).strip() for i in items if str(i).strip())


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


#: The transcode policy travels in the function's environment (4 KB for all its variables).
MAX_POLICY_BYTES = 3072


def policy_json(value: Any) -> str:
    """The transcode policy as compact JSON: from JSON text, a parsed object (cdk.json), or a .json /
    .toml file (validated by the transcoder itself at its start, and by `pacs transcoder check`)."""
    if value is None or value == "":
        return ""
    if isinstance(value, dict):
        data = value
    else:
        text = str(value).strip()
        if text.startswith("{"):
            data = json.loads(text)
        else:
            path = Path(text)
            raw = path.read_text(encoding="utf-8")
            data = tomllib.loads(raw) if path.suffix.lower() == ".toml" else json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("rule", data.get("rules")), list):
        raise ValueError("transcodePolicy: a table with a `rule` list (README, Transcoder)")
    return json.dumps(data, separators=(",", ":"))


def rules_json(value: Any, context: str = "deidRules", section: str = "Anonymizer") -> str:
    """The anonymizer's rules (or, with `context="deidPixelRules"`, Clean Pixel Data's rules) as compact
    JSON, from JSON text, a parsed object (cdk.json) or a .json / .toml file (validated by the anonymizer
    itself at its start, and by `pacs anonymizer check`)."""
    if value is None or value == "":
        return ""
    try:
        return policy_json(value)
    except ValueError as exc:
        reason = str(exc).replace("transcodePolicy: ", "").replace("README, Transcoder", f"README, {section}")
        raise ValueError(f"{context}: {reason}") from None


def rule_partitions(rules: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(source partitions, destination partitions) the rules name: the originals of the first are
    indexed (an S3 notification each), the anonymizer may write into the second."""
    if not rules:
        return (), ()
    data = json.loads(rules)
    sources: set[str] = set()
    targets: set[str] = set()
    for rule in data.get("rule", data.get("rules", [])):
        if not isinstance(rule, dict):
            continue
        parts = rule.get("partitions", [])
        sources.update([parts] if isinstance(parts, str) else [str(p) for p in parts])
        destination = rule.get("destination")
        if isinstance(destination, dict) and destination.get("partition"):
            targets.add(str(destination["partition"]))
    for p in sources | targets:
        if not _PARTITION.match(p):
            raise ValueError(f"deidRules: partition {p!r} is not a valid partition name")
    return tuple(sorted(sources)), tuple(sorted(targets))


@dataclass(frozen=True, slots=True)
class PacsConfig:
    stage: str = "dev"
    #: The tenant whose objects this deployment indexes (`{partition}/studies/...`).
    partition: str = "default"
    #: The VPC's address range; it must not overlap the networks on the other side of the VPN.
    vpc_cidr: str = "10.200.0.0/16"
    #: Networks (site-to-site VPN) allowed to reach the DICOM gateway.
    vpn_cidrs: tuple[str, ...] = ("192.168.0.0/16",)
    #: CloudWatch Logs retention and access-log expiry (days).
    retention_days: int = 365
    #: Originals move to Glacier Instant Retrieval after this many days.
    lifecycle_days: int = 90
    auth: Auth = "cognito"
    #: External OIDC issuer URL and audience (auth = "oidc").
    oidc_issuer: str = ""
    oidc_audience: tuple[str, ...] = ()
    #: ACM certificate for DICOM TLS on 2762, terminated at the load balancer; none: no 2762 listener.
    tls_certificate_arn: str = ""
    #: Where Cognito may send the viewer back after sign-in (OAuth callback URLs of the app client).
    callback_urls: tuple[str, ...] = ("http://localhost:3000/callback",)
    #: Origins allowed by CORS (the viewer's); `*` by default.
    cors_origins: tuple[str, ...] = ("*",)
    #: The most indexer invocations at once: protects the catalog from a bulk-import burst.
    indexer_concurrency: int = 20
    #: The transcoder's policy as JSON (context `transcodePolicy`: JSON text, or a .json / .toml file);
    #: empty: no rules, nothing derived. The most transcoder invocations at once.
    transcode_policy: str = ""
    transcoder_concurrency: int = 10
    #: The anonymizer's rules as JSON (context `deidRules`: JSON text, or a .json / .toml file); empty:
    #: no rules (export jobs still run). The most anonymizer invocations at once.
    deid_rules: str = ""
    anonymizer_concurrency: int = 10
    #: StudyStable after this many seconds without a new instance (context `studyQuietSeconds`).
    study_quiet_seconds: int = 60
    #: Clean Pixel Data's rules as JSON (context `deidPixelRules`: JSON text, or a .json / .toml file).
    deid_pixel_rules: str = ""
    #: Partitions export jobs may write de-identified copies into (context `exportPartitions`), besides
    #: the rules' destinations: the anonymizer may write there and nowhere else among the originals.
    export_partitions: tuple[str, ...] = ()
    #: Keep buckets, keys and the table when the stack is deleted (PHI: on unless `-c retainData=false`).
    retain_data: bool = True
    #: A directory to ship as the `pacs` layer instead of building it (tests: a tiny stand-in).
    layer_dir: str = ""
    #: Apply the cdk-nag packs (AwsSolutions, HIPAA Security) at synth.
    nag: bool = True
    account: str = ""
    region: str = ""

    def __post_init__(self) -> None:
        if not _STAGE.match(self.stage):
            raise ValueError(f"stage {self.stage!r}: lower-case letters, digits and '-', at most 16")
        if not _PARTITION.match(self.partition):
            raise ValueError(f"partition {self.partition!r} is not a valid partition name")
        vpc = ipaddress.ip_network(self.vpc_cidr)  # raises on a malformed CIDR
        for cidr in self.vpn_cidrs:
            if ipaddress.ip_network(cidr).overlaps(vpc):
                raise ValueError(f"vpnCidrs {cidr} overlaps vpcCidr {self.vpc_cidr}: choose another vpcCidr")
        if not self.vpn_cidrs:
            raise ValueError("vpnCidrs: at least one network must reach the gateway")
        if self.auth not in ("cognito", "oidc"):
            raise ValueError(f"auth {self.auth!r}: cognito or oidc")
        if self.auth == "oidc" and not (self.oidc_issuer.startswith("https://") and self.oidc_audience):
            raise ValueError("auth=oidc needs oidcIssuer (https://…) and oidcAudience")
        if len(self.transcode_policy.encode()) > MAX_POLICY_BYTES:
            size = len(self.transcode_policy.encode())
            raise ValueError(f"transcodePolicy: {size} bytes of JSON; Lambda's environment takes 4 KB in "
                             f"all: keep the policy under {MAX_POLICY_BYTES} bytes")
        for name, text in (("deidRules", self.deid_rules), ("deidPixelRules", self.deid_pixel_rules)):
            if len(text.encode()) > MAX_POLICY_BYTES:
                raise ValueError(f"{name}: {len(text.encode())} bytes of JSON; Lambda's environment takes "
                                 f"4 KB in all: keep the rules under {MAX_POLICY_BYTES} bytes")
        rule_partitions(self.deid_rules)  # raises on a partition name that cannot be a key prefix
        for p in self.export_partitions:
            if not _PARTITION.match(p) or p == self.partition:
                raise ValueError(f"exportPartitions: {p!r} is not a partition copies may go into")
        if self.retention_days <= 0 or self.lifecycle_days <= 0:
            raise ValueError("retentionDays and lifecycleDays must be positive")

    @classmethod
    def from_context(cls, node: Node) -> PacsConfig:
        def ctx(name: str) -> Any:
            return node.try_get_context(name)

        defaults = cls()
        stage = str(ctx("stage") or defaults.stage)
        return cls(
            stage=stage,
            partition=str(ctx("partition") or defaults.partition),
            vpc_cidr=str(ctx("vpcCidr") or defaults.vpc_cidr),
            vpn_cidrs=_split(ctx("vpnCidrs")) or defaults.vpn_cidrs,
            retention_days=int(ctx("retentionDays") or defaults.retention_days),
            lifecycle_days=int(ctx("lifecycleDays") or defaults.lifecycle_days),
            auth=str(ctx("auth") or defaults.auth),  # type: ignore[arg-type]
            oidc_issuer=str(ctx("oidcIssuer") or ""),
            oidc_audience=_split(ctx("oidcAudience")),
            tls_certificate_arn=str(ctx("tlsCertificateArn") or ""),
            cors_origins=_split(ctx("corsOrigins")) or defaults.cors_origins,
            callback_urls=_split(ctx("callbackUrls")) or defaults.callback_urls,
            indexer_concurrency=int(ctx("indexerConcurrency") or defaults.indexer_concurrency),
            transcode_policy=policy_json(ctx("transcodePolicy")),
            transcoder_concurrency=int(ctx("transcoderConcurrency") or defaults.transcoder_concurrency),
            deid_rules=rules_json(ctx("deidRules")),
            deid_pixel_rules=rules_json(ctx("deidPixelRules"), "deidPixelRules", "De-identification"),
            export_partitions=_split(ctx("exportPartitions")),
            anonymizer_concurrency=int(ctx("anonymizerConcurrency") or defaults.anonymizer_concurrency),
            study_quiet_seconds=int(ctx("studyQuietSeconds") or defaults.study_quiet_seconds),
            retain_data=_flag(ctx("retainData"), True),
            layer_dir=str(ctx("layerDir") or ""),
            nag=_flag(ctx("nag"), True),
            account=str(ctx("account") or ""),
            region=str(ctx("region") or ""),
        )
