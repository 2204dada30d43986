"""What the moto tests of the SQS-driven functions (transcoder, anonymizer) share: the function's queue
and DLQ fed by a rule on the bus (as infra.pipeline.event_queue builds them), its messages received,
and batches of them delivered to the handler as Lambda would."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.integration.test_moto_pipeline import REGION, MotoPacs, lambda_context


def event_queue(world: MotoPacs, bus: str, name: str, detail_types: list[str]) -> tuple[str, str, str]:
    """(url, ARN, DLQ URL) of the queue `pacs-it-{name}` the rule `pacs-{name}` on `bus` (created
    here) feeds with `detail_types`, its redrive policy to `pacs-it-{name}-dlq`."""
    import boto3

    events = boto3.client("events", region_name=REGION)
    events.create_event_bus(Name=bus)
    sqs = world.sqs
    dlq_url = sqs.create_queue(QueueName=f"pacs-it-{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=f"pacs-it-{name}", Attributes={
        "VisibilityTimeout": "60",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"pacs-{name}", EventBusName=bus, EventPattern=json.dumps(
        {"source": ["pacs"], "detail-type": detail_types}))
    events.put_targets(Rule=f"pacs-{name}", EventBusName=bus, Targets=[{"Id": name, "Arn": arn}])
    return url, arn, dlq_url


@dataclass
class Consumer:
    world: MotoPacs
    url: str
    arn: str
    dlq_url: str

    def receive(self, url: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while got := self.world.sqs.receive_message(
                QueueUrl=url or self.url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", []):
            self.world.sqs.delete_message_batch(QueueUrl=url or self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            out += got
        return out

    def record(self, m: dict[str, Any]) -> dict[str, Any]:
        return {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": {**m.get("Attributes", {}), "ApproximateReceiveCount": "1"},
                "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                "eventSourceARN": self.arn, "awsRegion": REGION}

    def batch(self, handler: Callable[[dict[str, Any], Any], Any], messages: list[dict[str, Any]]) -> list[str]:
        """The IDs of the messages `handler` reported failed."""
        result = handler({"Records": [self.record(m) for m in messages]}, lambda_context())
        return [f["itemIdentifier"] for f in result["batchItemFailures"]]
