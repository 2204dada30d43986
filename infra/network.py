"""Network: a VPC with private isolated subnets only (no NAT, no internet gateway on the data path),
gateway endpoints for S3 and DynamoDB, interface endpoints for the other services the functions and
the gateway call, and flow logs."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import PacsConfig

#: Interface endpoints: what the functions and the gateway task reach besides S3 and DynamoDB.
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "Events": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "XRay": ec2.InterfaceVpcEndpointAwsService.XRAY,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
}


class Network(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, logs_key: kms.IKey) -> None:
        super().__init__(scope, cid)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(
                name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22)],
            restrict_default_security_group=True,
        )
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        flow_log_group = logs.LogGroup(self, "FlowLogs", encryption_key=logs_key,
                                       retention=retention(config.retention_days))
        self.vpc.add_flow_log("FlowLog", traffic_type=ec2.FlowLogTrafficType.ALL,
                              destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group))
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3,
                                      subnets=[self.subnets])
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB,
                                      subnets=[self.subnets])
        # One security group for the interface endpoints: HTTPS from inside the VPC only. (The CIDR is
        # the literal from context, not the VPC's attribute, so the rules can be checked at synth.)
        self.endpoints_security_group = ec2.SecurityGroup(
            self, "EndpointsSg", vpc=self.vpc, allow_all_outbound=False,
            description="VPC interface endpoints: HTTPS from the VPC")
        self.endpoints_security_group.add_ingress_rule(ec2.Peer.ipv4(config.vpc_cidr), ec2.Port.tcp(443),
                                                       "HTTPS from the VPC")
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(name, service=service, subnets=self.subnets,
                                            private_dns_enabled=True, open=False,
                                            security_groups=[self.endpoints_security_group])


_RETENTION_DAYS: tuple[tuple[int, str], ...] = (
    (1, "ONE_DAY"), (3, "THREE_DAYS"), (5, "FIVE_DAYS"), (7, "ONE_WEEK"), (14, "TWO_WEEKS"),
    (30, "ONE_MONTH"), (60, "TWO_MONTHS"), (90, "THREE_MONTHS"), (120, "FOUR_MONTHS"), (150, "FIVE_MONTHS"),
    (180, "SIX_MONTHS"), (365, "ONE_YEAR"), (400, "THIRTEEN_MONTHS"), (545, "EIGHTEEN_MONTHS"),
    (731, "TWO_YEARS"), (1096, "THREE_YEARS"), (1827, "FIVE_YEARS"), (2192, "SIX_YEARS"),
    (2557, "SEVEN_YEARS"), (2922, "EIGHT_YEARS"), (3288, "NINE_YEARS"), (3653, "TEN_YEARS"),
)


def retention(days: int) -> logs.RetentionDays:
    """The smallest CloudWatch Logs retention that keeps logs at least `days` days."""
    for value, name in _RETENTION_DAYS:
        if value >= days:
            return getattr(logs.RetentionDays, name)  # type: ignore[no-any-return]
    return logs.RetentionDays.TEN_YEARS
