"""A local AWS for `pacs up --backend aws`: moto's server with the resources `cdk deploy` makes.

    python tools/moto_up.py [--port N] [--partition P] [-- COMMAND ...]

Starts `ThreadedMotoServer` on 127.0.0.1, creates the originals and derived buckets, the catalog table,
the index queue with its dead-letter queue (redrive policy), the bucket notification (ObjectCreated
and ObjectRemoved of `{partition}/studies/*.dcm` → the index queue), the event bus with a rule that
copies every `pacs` event to an SQS queue (to look at them), and prints the `PACS_*` environment.
With a COMMAND it runs it in that environment (`{endpoint}` in its arguments is replaced by the
endpoint URL) and stops the server when it exits; otherwise it serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

#: moto accepts any credentials; boto3 only needs some. Never a real account: every client below
#: is given the local endpoint.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
REGION = "us-east-1"
#: Receives before a message moves to the dead-letter queue (as the CDK app sets it).
MAX_RECEIVE_COUNT = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provision(endpoint: str, *, name: str = "pacs-local", partition: str = "default",
              visibility_timeout: int = 30) -> dict[str, str]:
    """Create the resources on the moto server at `endpoint`; returns the `PACS_*` environment."""
    import boto3
    from pacs.catalog.dynamodb import DynamoCatalog

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    s3, sqs, events = client("s3"), client("sqs"), client("events")
    bucket, derived = name, f"{name}-derived"
    for b in (bucket, derived):
        s3.create_bucket(Bucket=b)
    DynamoCatalog(name, region=REGION, host=endpoint, create=True)

    def queue(queue_name: str, **attributes: str) -> tuple[str, str]:
        url = sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    dlq_url, dlq_arn = queue(f"{name}-index-dlq")
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    queue_url, queue_arn = queue(f"{name}-index", VisibilityTimeout=str(visibility_timeout),
                                 RedrivePolicy=json.dumps(redrive))
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{
            "Id": "pacs-index", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{partition}/studies/"},
                                               {"Name": "suffix", "Value": ".dcm"}]}},
        }],
    })
    bus = name
    events.create_event_bus(Name=bus)
    events_url, events_arn = queue(f"{name}-events")
    events.put_rule(Name=f"{name}-all", EventBusName=bus, EventPattern=json.dumps({"source": ["pacs"]}))
    events.put_targets(Rule=f"{name}-all", EventBusName=bus, Targets=[{"Id": "sqs", "Arn": events_arn}])
    return {
        "PACS_BACKEND": "aws", "PACS_ENDPOINT_URL": endpoint, "PACS_REGION": REGION,
        "PACS_PARTITION": partition, "PACS_BUCKET": bucket, "PACS_DERIVED_BUCKET": derived,
        "PACS_TABLE": name, "PACS_EVENT_BUS": bus, "PACS_QUEUE_URL": queue_url, "PACS_DLQ_URL": dlq_url,
        # Not a PACS setting: where the bus's rule copies every event (`aws sqs receive-message`).
        "PACS_LOCAL_EVENTS_QUEUE_URL": events_url,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="moto_up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="moto's port (a free one)")
    parser.add_argument("--partition", default="default")
    parser.add_argument("--name", default="pacs-local", help="bucket, table, queue and bus names")
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    for k, v in CREDENTIALS.items():
        os.environ.setdefault(k, v)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = args.port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        env = provision(endpoint, name=args.name, partition=args.partition)
        print(f"moto: AWS on {endpoint}", flush=True)
        for k, v in {**CREDENTIALS, **env}.items():
            print(f"export {k}={v}", flush=True)
        if command:
            argv = [a.replace("{endpoint}", endpoint) for a in command]
            return _run(argv, {**os.environ, **CREDENTIALS, **env})
        stop = threading.Event()
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: stop.set())
        print("moto: serving (Ctrl-C to stop)", flush=True)
        stop.wait()
        return 0
    finally:
        server.stop()


def _run(command: list[str], env: dict[str, str]) -> int:
    """Run the command; Ctrl-C and SIGTERM are passed on to it, and its exit status returned."""
    proc = subprocess.Popen(command, env=env)
    forward = lambda signum, _frame: proc.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
