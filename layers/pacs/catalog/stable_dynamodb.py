"""Study-stable timers' state on DynamoDB (AWS), one item per study in the catalog's table:

    PK = {partition}#STABLE#{study}   SK = STABLE   lastChange, due (absent: not armed), generation, pending

Every write is one conditional UpdateItem; there is no `due()` query (no Scan): on AWS the timer itself
is an SQS message with a delay (`functions/stable`), which reads its study's item with `get`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3

from pacs.services.study_stable import Timer

SK = "STABLE"
_CONDITION_FAILED = "ConditionalCheckFailedException"


def _n(value: float) -> dict[str, str]:
    return {"N": str(Decimal(repr(value)))}


class DynamoTimerStore:
    """`pacs.services.study_stable.TimerStore` on the catalog's table (`due`/`pending`: not on AWS)."""

    def __init__(self, table: str, *, region: str = "us-east-1", endpoint_url: str | None = None,
                 client: Any = None) -> None:
        self.table = table
        self.client = client or boto3.client("dynamodb", region_name=region,
                                             endpoint_url=endpoint_url or None)

    def _key(self, partition: str, study_uid: str) -> dict[str, Any]:
        return {"PK": {"S": f"{partition}#STABLE#{study_uid}"}, "SK": {"S": SK}}

    def _update(self, partition: str, study_uid: str, expression: str, condition: str,
                values: dict[str, Any]) -> bool:
        try:
            self.client.update_item(TableName=self.table, Key=self._key(partition, study_uid),
                                    UpdateExpression=expression, ConditionExpression=condition,
                                    ExpressionAttributeValues=values)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def record(self, partition: str, study_uid: str, at: float, due: float | None) -> bool:
        values = {":at": _n(at), ":zero": _n(0)}
        expression = "SET lastChange = :at, generation = if_not_exists(generation, :zero)"
        if due is None:
            expression += " REMOVE due"
        else:
            expression = expression.replace("SET ", "SET due = :due, ")
            values[":due"] = _n(due)
        return self._update(partition, study_uid, expression,
                            "attribute_not_exists(PK) OR lastChange < :at", values)

    def due(self, now: float, limit: int = 100) -> list[Timer]:
        raise NotImplementedError("on AWS a timer is an SQS delay message (functions/stable)")

    def claim(self, timer: Timer) -> bool:
        return self._update(timer.partition, timer.study_uid,
                            "SET generation = generation + :one, pending = :one REMOVE due",
                            "lastChange = :c AND generation = :g AND attribute_exists(due)",
                            {":one": _n(1), ":c": _n(timer.last_change), ":g": _n(timer.generation)})

    def release(self, timer: Timer) -> None:
        self._update(timer.partition, timer.study_uid,
                     "SET generation = generation - :one, pending = :zero, due = if_not_exists(due, :due)",
                     "pending = :one", {":one": _n(1), ":zero": _n(0), ":due": _n(timer.due)})

    def published(self, timer: Timer) -> None:
        self._update(timer.partition, timer.study_uid, "SET pending = :zero", "attribute_exists(PK)",
                     {":zero": _n(0)})

    def pending(self) -> list[Timer]:
        return []  # on AWS a claim left pending is found by its redelivered timer message (`get`)

    def get(self, partition: str, study_uid: str) -> tuple[Timer, bool] | None:
        """The study's timer (`due` 0 when not armed) and whether its claim is pending."""
        item = self.client.get_item(TableName=self.table, Key=self._key(partition, study_uid),
                                    ConsistentRead=True).get("Item")
        if item is None:
            return None
        due = float(item["due"]["N"]) if "due" in item else 0.0
        timer = Timer(partition, study_uid, float(item["lastChange"]["N"]), due, int(item["generation"]["N"]))
        return timer, item.get("pending", {}).get("N") == "1"
