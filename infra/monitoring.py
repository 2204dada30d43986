"""Monitoring: alarms to an encrypted SNS topic (DLQ depth > 0, Lambda errors and throttles, API 5xx,
unhealthy gateway targets, object store errors, indexer lag) and one CloudWatch dashboard of the same
metrics, with the PACS's own figures the Lambda handlers emit as EMF (`pacs.monitoring.emf`: namespace
PACS, dimension `service`): instances stored and refused (STOW-RS), indexed, indexing failures, indexer
lag, bytes indexed (the catalog's growth: DynamoDB totals would take a Scan), object store errors; and
the gateway's (`pacs.monitoring.emf_reporter`, service `gateway`): associations, DIMSE operations and
failures, C-STORE instances stored and refused, TLS handshake failures, object store errors."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import PacsConfig

PERIOD = Duration.minutes(5)
#: The CloudWatch namespace of the handlers' EMF metrics (`functions.METRICS_NAMESPACE`).
NAMESPACE = "PACS"
#: The EMF metric names (`pacs.monitoring.metrics.EMF_NAMES`; infra imports no `pacs`: a test compares).
PACS_METRICS = {
    "instances_stored": "InstancesStored",
    "instances_refused": "InstancesRefused",
    "indexed": "InstancesIndexed",
    "indexed_bytes": "IndexedBytes",
    "indexing_failures": "IndexingFailures",
    "indexer_lag": "IndexerLag",
    "object_store_errors": "ObjectStoreErrors",
}
#: The gateway's EMF figures (`pacs.monitoring.emf_reporter`: counts per report, AssociationsOpen a gauge).
GATEWAY_METRICS = ("AssociationsAccepted", "AssociationsRejected", "DimseOperations", "DimseFailures",
                   "InstancesStored", "InstancesRefused", "TlsHandshakeFailures", "ObjectStoreErrors",
                   "AssociationsOpen")
#: Indexer lag (ms, the maximum of a period) that raises the alarm: an object unsearchable for 5 minutes.
LAG_ALARM_MS = 300_000


def pacs_metric(key: str, service: str, statistic: str = "Sum", label: str | None = None) -> cw.Metric:
    return cw.Metric(namespace=NAMESPACE, metric_name=PACS_METRICS[key], dimensions_map={"service": service},
                     statistic=statistic, period=PERIOD, label=label)


def gateway_metric(name: str, statistic: str = "Sum", label: str | None = None) -> cw.Metric:
    assert name in GATEWAY_METRICS
    return cw.Metric(namespace=NAMESPACE, metric_name=name, dimensions_map={"service": "gateway"},
                     statistic=statistic, period=PERIOD, label=label)


class Monitoring(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, key: kms.IKey,
                 dlqs: dict[str, sqs.IQueue], functions: Sequence[lambda_.IFunction], api: apigw.IHttpApi,
                 target_group: elbv2.NetworkTargetGroup) -> None:
        super().__init__(scope, cid)
        self.topic = sns.Topic(self, "Alarms", display_name=f"PACS {config.stage} alarms", master_key=key,
                               enforce_ssl=True)
        action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []

        def alarm(cid: str, metric: cw.IMetric, description: str, threshold: float = 0) -> cw.Alarm:
            a = cw.Alarm(self, cid, metric=metric, threshold=threshold, evaluation_periods=1,
                         comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                         treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                         alarm_description=f"pacs-{config.stage}: {description}")
            a.add_alarm_action(action)
            a.add_ok_action(action)
            self.alarms.append(a)
            return a

        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"pacs-{config.stage}")
        dlq_metrics = []
        for name, q in dlqs.items():
            m = q.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
            alarm(f"{name}Depth", m, f"messages in the {name} dead-letter queue")
            dlq_metrics.append(m)
        errors, throttles = [], []
        for fn in functions:
            name = fn.node.id
            e, t = fn.metric_errors(period=PERIOD), fn.metric_throttles(period=PERIOD)
            alarm(f"{name}Errors", e, f"{name} function errors")
            alarm(f"{name}Throttles", t, f"{name} function throttled")
            errors.append(e)
            throttles.append(t)
        api_5xx = api.metric_server_error(period=PERIOD)
        alarm("Api5xx", api_5xx, "DICOMweb API 5xx responses")
        unhealthy = target_group.metrics.un_healthy_host_count(period=PERIOD, statistic="Maximum")
        alarm("GatewayUnhealthy", unhealthy, "DICOM gateway targets unhealthy")
        store_errors = [pacs_metric("object_store_errors", svc, label=f"{svc} object store errors")
                        for svc in ("indexer", "dicomweb")]
        store_errors.append(gateway_metric("ObjectStoreErrors", label="gateway object store errors"))
        alarm("GatewayObjectStoreErrors", gateway_metric("ObjectStoreErrors"),
              "gateway: object store writes failed")
        for svc in ("indexer", "dicomweb"):  # alarms on unlabelled metrics (a label makes a query)
            alarm(f"{svc.capitalize()}ObjectStoreErrors", pacs_metric("object_store_errors", svc),
                  f"{svc}: object store operations failed")
        alarm("IndexerLag", pacs_metric("indexer_lag", "indexer", "Maximum"),
              "objects not searchable 5 minutes after their write", LAG_ALARM_MS)
        lag_max = pacs_metric("indexer_lag", "indexer", "Maximum", "max")
        indexed = pacs_metric("indexed", "indexer", label="instances indexed")
        indexed_bytes = pacs_metric("indexed_bytes", "indexer", label="bytes indexed")
        dashboard.add_widgets(
            cw.GraphWidget(title="DIMSE associations: open (max) / accepted / rejected",
                           left=[gateway_metric("AssociationsOpen", "Maximum", "open")],
                           right=[gateway_metric("AssociationsAccepted", label="accepted"),
                                  gateway_metric("AssociationsRejected", label="rejected"),
                                  gateway_metric("TlsHandshakeFailures", label="TLS handshakes refused")],
                           width=12),
            cw.GraphWidget(title="DIMSE operations / failures, C-STORE instances stored / refused",
                           left=[gateway_metric("DimseOperations", label="operations"),
                                 gateway_metric("InstancesStored", label="stored")],
                           right=[gateway_metric("DimseFailures", label="failures"),
                                  gateway_metric("InstancesRefused", label="refused")], width=12),
            cw.GraphWidget(title="STOW-RS instances stored / refused",
                           left=[pacs_metric("instances_stored", "dicomweb", label="stored")],
                           right=[pacs_metric("instances_refused", "dicomweb", label="refused")], width=12),
            cw.GraphWidget(title="Instances indexed / indexing failures", left=[indexed],
                           right=[pacs_metric("indexing_failures", "indexer", label="failures")], width=12),
            cw.GraphWidget(title="Indexer lag: object write to catalog commit (ms)",
                           left=[pacs_metric("indexer_lag", "indexer", "p50", "p50"),
                                 pacs_metric("indexer_lag", "indexer", "p99", "p99"), lag_max], width=12),
            cw.GraphWidget(title="Catalog growth (instances, bytes indexed: running sums)",
                           left=[cw.MathExpression(expression="RUNNING_SUM(i)", using_metrics={"i": indexed},
                                                   period=PERIOD, label="instances")],
                           right=[cw.MathExpression(expression="RUNNING_SUM(b)",
                                                    using_metrics={"b": indexed_bytes},
                                                    period=PERIOD, label="bytes")], width=12),
            cw.GraphWidget(title="Object store errors", left=store_errors, width=12),
            cw.GraphWidget(title="Dead-letter queues", left=dlq_metrics, width=12),
            cw.GraphWidget(title="API requests and 5xx", left=[api.metric_count(period=PERIOD)],
                           right=[api_5xx], width=12),
            cw.GraphWidget(title="Function errors", left=errors, width=12),
            cw.GraphWidget(title="Function throttles", left=throttles, width=12),
            cw.GraphWidget(title="Gateway healthy / unhealthy targets",
                           left=[target_group.metrics.healthy_host_count(period=PERIOD)], right=[unhealthy],
                           width=12),
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=12),
        )
