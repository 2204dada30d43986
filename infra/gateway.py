"""Gateway: the DIMSE gateway image (`gateway/Dockerfile`, built by `cdk deploy` from the repository
root; synth needs no Docker) as an ECS Fargate service in the isolated subnets, behind an internal
Network Load Balancer: DICOM on 11112, DICOM TLS on 2762 (terminated at the load balancer with an ACM
certificate from context) — both reachable only from the VPN CIDRs. Autoscaling on CPU.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, Duration, IgnoreMode, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import PacsConfig
from infra.functions import Resources, _cfn, pacs_environment
from infra.nag import GRANT_WILDCARDS, Why, grant_findings, suppress
from infra.network import retention

ROOT = Path(__file__).resolve().parent.parent
DICOM_PORT, DICOM_TLS_PORT = 11112, 2762
MIN_TASKS, MAX_TASKS = 2, 6
#: The catalog-table partition keys (`{partition}#…`) the gateway writes: MPPS steps, commitments.
GATEWAY_WRITABLE_KEYS = ("MPPS", "STGCMT")
NLB_LOG_PREFIX = "nlb"
#: Only what the image build needs is sent to Docker (what the Dockerfile copies); the Dockerfile
#: itself is read from the context too.
_DOCKER_CONTEXT = ["*", "!pyproject.toml", "!README.md", "!layers", "!gateway", "!functions",
                   "!gateway/Dockerfile",
                   "**/__pycache__", "**/*.pyc", "**/node_modules"]


class Gateway(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, vpc: ec2.IVpc,
                 subnets: ec2.SubnetSelection, resources: Resources, logs_key: kms.IKey,
                 access_logs: s3.IBucket) -> None:
        super().__init__(scope, cid)
        r = resources
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc,
                                   container_insights_v2=ecs.ContainerInsights.ENHANCED)
        task = ecs.FargateTaskDefinition(self, "Task", cpu=1024, memory_limit_mib=2048,
                                         runtime_platform=ecs.RuntimePlatform(
                                             cpu_architecture=ecs.CpuArchitecture.X86_64,
                                             operating_system_family=ecs.OperatingSystemFamily.LINUX))
        log_group = logs.LogGroup(self, "Logs", encryption_key=logs_key,
                                  retention=retention(config.retention_days),
                                  removal_policy=RemovalPolicy.RETAIN)
        image = ecs.ContainerImage.from_asset(
            str(ROOT), file="gateway/Dockerfile", exclude=_DOCKER_CONTEXT, ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64)
        task.add_container(
            "Gateway", image=image, essential=True,
            environment={**pacs_environment(config, r), "PACS_HOST": "0.0.0.0",
                         "PACS_DIMSE_PORT": str(DICOM_PORT)},
            logging=ecs.LogDriver.aws_logs(stream_prefix="gateway", log_group=log_group),
            port_mappings=[ecs.PortMapping(container_port=DICOM_PORT, protocol=ecs.Protocol.TCP)],
            health_check=ecs.HealthCheck(
                command=["CMD", "python", "-c",
                         f"import socket; socket.create_connection(('127.0.0.1', {DICOM_PORT}), 3).close()"],
                interval=Duration.seconds(30), timeout=Duration.seconds(5), retries=3,
                start_period=Duration.seconds(30)),
            readonly_root_filesystem=False,
        )
        # Least privilege: store originals (read them back for C-GET/C-MOVE), read the catalog (and the
        # node registry in it), write only the partition's MPPS and storage-commitment items, and
        # publish MppsUpdated events.
        r.originals.grant_read(task.task_role)
        r.originals.grant_put(task.task_role)
        r.table.grant_read_data(task.task_role)
        task.task_role.add_to_principal_policy(iam.PolicyStatement(
            sid="MppsAndCommitmentItems",
            actions=["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"],
            resources=[r.table.table_arn],
            conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [
                f"{config.partition}#{kind}" for kind in GATEWAY_WRITABLE_KEYS]}},
        ))
        r.bus.grant_put_events_to(task.task_role)
        suppress(task.task_role, Why("AwsSolutions-IAM5", GRANT_WILDCARDS, applies_to=grant_findings(
            buckets=[_cfn(r.originals)], tables=[_cfn(r.table)], write=True)))
        suppress(task.obtain_execution_role(), Why(
            "AwsSolutions-IAM5", "ecr:GetAuthorizationToken has no resource-level permissions (the image "
            "pull itself is scoped to the asset repository).", applies_to=["Resource::*"]))

        self.lb_security_group = ec2.SecurityGroup(self, "LbSg", vpc=vpc, allow_all_outbound=False,
                                                   description="DICOM load balancer: the VPN CIDRs only")
        self.service_security_group = ec2.SecurityGroup(
            self, "ServiceSg", vpc=vpc, allow_all_outbound=False,
            description="DICOM gateway tasks: from the load balancer; HTTPS out to AWS endpoints")
        self.service_security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                                    "HTTPS to AWS endpoints (isolated subnets: no internet)")
        self.service_security_group.add_ingress_rule(self.lb_security_group, ec2.Port.tcp(DICOM_PORT),
                                                     "DICOM from the load balancer (and its health checks)")
        self.lb_security_group.add_egress_rule(self.service_security_group, ec2.Port.tcp(DICOM_PORT),
                                               "DICOM to the gateway tasks")
        for cidr in config.vpn_cidrs:  # C-MOVE destinations and storage-commitment reports
            self.service_security_group.add_egress_rule(ec2.Peer.ipv4(cidr), ec2.Port.all_tcp(),
                                                        "DICOM associations to nodes across the VPN")
        ports = [DICOM_PORT] + ([DICOM_TLS_PORT] if config.tls_certificate_arn else [])
        for cidr in config.vpn_cidrs:
            for port in ports:
                what = "DICOM TLS" if port == DICOM_TLS_PORT else "DICOM"
                self.lb_security_group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(port),
                                                        f"{what} from VPN")

        self.service = ecs.FargateService(
            self, "Service", cluster=self.cluster, task_definition=task,
            desired_count=MIN_TASKS, vpc_subnets=subnets, security_groups=[self.service_security_group],
            assign_public_ip=False, circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100, max_healthy_percent=200, enable_execute_command=False,
        )
        scaling = self.service.auto_scale_task_count(min_capacity=MIN_TASKS, max_capacity=MAX_TASKS)
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=60,
                                         scale_in_cooldown=Duration.minutes(5),
                                         scale_out_cooldown=Duration.minutes(1))

        self.nlb = elbv2.NetworkLoadBalancer(
            self, "Nlb", vpc=vpc, internet_facing=False, vpc_subnets=subnets,
            security_groups=[self.lb_security_group], cross_zone_enabled=True,
            deletion_protection=config.retain_data,
        )
        self.target_group = elbv2.NetworkTargetGroup(
            self, "Targets", vpc=vpc, port=DICOM_PORT, protocol=elbv2.Protocol.TCP,
            target_type=elbv2.TargetType.IP, deregistration_delay=Duration.seconds(60),
            health_check=elbv2.HealthCheck(protocol=elbv2.Protocol.TCP, port=str(DICOM_PORT),
                                           interval=Duration.seconds(10), healthy_threshold_count=2,
                                           unhealthy_threshold_count=2),
            targets=[self.service],
        )
        plain = self.nlb.add_listener("Dicom", port=DICOM_PORT, protocol=elbv2.Protocol.TCP,
                                      default_target_groups=[self.target_group])
        if config.tls_certificate_arn:
            self.nlb.add_listener(
                "DicomTls", port=DICOM_TLS_PORT, protocol=elbv2.Protocol.TLS,
                certificates=[elbv2.ListenerCertificate.from_arn(config.tls_certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS, default_target_groups=[self.target_group])
            self._log_tls_connections(access_logs)
        else:
            suppress(self.nlb, Why(
                "AwsSolutions-ELB2",
                "Without a TLS listener an NLB writes no access logs; the DIMSE gateway logs every "
                "association itself (ECS logs) and VPC flow logs record the connections.",
            ), Why(
                "HIPAA.Security-ELBLoggingEnabled",
                "Without a TLS listener an NLB writes no access logs; associations are logged by the gateway "
                "and the VPC flow logs.",
            ))
        listener_why = ("DICOM on 11112 is plain TCP by DICOM convention (PS3.8), inside the VPN tunnel, "
                        "which encrypts it; DICOM TLS is offered on 2762 with an ACM certificate "
                        "(tlsCertificateArn).")
        suppress(plain, Why("HIPAA.Security-ELBv2ACMCertificateRequired", listener_why))
        if not config.retain_data:
            suppress(self.nlb, Why("HIPAA.Security-ELBDeletionProtectionEnabled",
                                   "retainData=false: a throw-away stage, deleted with its stack."))
        suppress(task, Why(
            "AwsSolutions-ECS2",
            "The environment holds resource names only (bucket, table, bus, partition); no secrets.",
        ))
        self.dns_name = self.nlb.load_balancer_dns_name

    def _log_tls_connections(self, bucket: s3.IBucket) -> None:
        """NLB access logs (they cover TLS listeners only) to the access-log bucket, written by the log
        delivery service. Set by hand: CDK's `log_access_logs` needs a region at synth time."""
        prefix = f"{NLB_LOG_PREFIX}/AWSLogs/{Aws.ACCOUNT_ID}/*"
        delivery = iam.ServicePrincipal("delivery.logs.amazonaws.com")
        source = {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
        bucket.add_to_resource_policy(iam.PolicyStatement(
            principals=[delivery], actions=["s3:PutObject"], resources=[bucket.arn_for_objects(prefix)],
            conditions={"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control",
                                         "aws:SourceAccount": Aws.ACCOUNT_ID}}))
        bucket.add_to_resource_policy(iam.PolicyStatement(
            principals=[delivery], actions=["s3:GetBucketAcl"], resources=[bucket.bucket_arn],
            conditions=source))
        self.nlb.set_attribute("access_logs.s3.enabled", "true")
        self.nlb.set_attribute("access_logs.s3.bucket", bucket.bucket_name)
        self.nlb.set_attribute("access_logs.s3.prefix", NLB_LOG_PREFIX)
        if bucket.policy is not None:  # the policy must exist before the load balancer checks it
            self.nlb.node.add_dependency(bucket.policy)
