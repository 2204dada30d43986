"""`pacs up --backend aws` on moto's server (`ThreadedMotoServer`, provisioned by tools/moto_up.py):

dcmtk `storescu` → the gateway → moto's S3 → bucket notification → SQS → the supervisor's index worker
→ DynamoDB (and EventBridge → rule → SQS) → QIDO-RS / WADO-RS over HTTP. The same process tree as
embedded `pacs up`, on the AWS adapters.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pydicom
import pytest
from moto.server import ThreadedMotoServer
from pacs.catalog.dynamodb import DynamoCatalog
from pacs.cli.main import main as pacs_main
from pacs.storage.s3 import S3BlobStore

from tests.integration.test_moto_pipeline import MotoPacs, files, uids
from tests.interop.support import PacsProcess, dcmtk_tool, free_port, parse_multipart, run_tool, wait_until
from tools.moto_up import provision

pytestmark = pytest.mark.interop
STORESCU = dcmtk_tool("storescu")


@pytest.fixture
def moto_env(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto server on a free port with the PACS's resources; the `PACS_*` environment naming them."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = provision(f"http://127.0.0.1:{port}", name="pacs-up-it")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield env
    finally:
        server.stop()


def test_pacs_up_on_moto_stores_indexes_and_serves(moto_env: dict[str, str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert STORESCU is not None, "dcmtk storescu is not installed: run `make setup` (Debian dcmtk)"
    endpoint = moto_env["PACS_ENDPOINT_URL"]
    f = files()
    sent = {"ct.dcm": f.ct, "ct2.dcm": f.ct2, "mr.dcm": f.mr}
    for name, data in sent.items():
        (tmp_path / name).write_bytes(data)

    pacs = PacsProcess(data_dir=tmp_path / "unused", log_path=tmp_path / "pacs.log", workers=1, env={
        **moto_env, "PACS_REQUIRE_KNOWN_CALLERS": "0",  # loopback: storescu is no registered node
    })
    pacs.start()
    try:
        log = pacs.log_text()
        assert f"aws storage at s3://{moto_env['PACS_BUCKET']} at {endpoint}" in log, log[-3000:]
        out = run_tool([STORESCU, "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port),
                        *(str(tmp_path / n) for n in sent)])
        assert out.returncode == 0, out.stdout + out.stderr

        with httpx.Client(base_url=pacs.dicomweb_url, timeout=30.0) as http:
            def studies() -> list[dict[str, Any]]:
                r = http.get("/studies")
                return [] if r.status_code == 204 else list(r.json())

            found = wait_until(studies, lambda s: sum(i["00201208"]["Value"][0] for i in s) == 3,
                               what="3 instances indexed from SQS")
            assert {i["0020000D"]["Value"][0] for i in found} == {uids(f.ct)[0], uids(f.mr)[0]}
            study, series, sop = uids(f.mr)
            r = http.get(f"/studies/{study}/series/{series}/instances/{sop}",
                         headers={"Accept": 'multipart/related; type="application/dicom"'})
            assert r.status_code == 200
            [part] = parse_multipart(r.content, r.headers["content-type"])
            ds = pydicom.dcmread(io.BytesIO(part))
            assert (ds.SOPInstanceUID, ds.PatientID) == (sop, "4MR1")

        # The catalog (DynamoDB) agrees exactly with the object store (S3), both on moto's server.
        clients = {s: boto3.client(s, endpoint_url=endpoint, region_name="us-east-1") for s in ("s3", "sqs")}
        world = MotoPacs(s3=clients["s3"], sqs=clients["sqs"], queue_url=moto_env["PACS_QUEUE_URL"], queue_arn="",
                         store=S3BlobStore(moto_env["PACS_BUCKET"], derived_bucket=moto_env["PACS_DERIVED_BUCKET"],
                                           client=clients["s3"]),
                         catalog=DynamoCatalog(moto_env["PACS_TABLE"], host=endpoint))
        world.assert_catalog_matches_store()
        # Instance metadata (written when the indexer's burst ends) goes to the derived bucket.
        wait_until(lambda: clients["s3"].list_objects_v2(Bucket=moto_env["PACS_DERIVED_BUCKET"]).get("KeyCount"),
                   lambda n: n == 3 + 2, what="3 instance + 2 series metadata objects in the derived bucket")

        # The domain events reached the bus (its rule copies them to a queue).
        def events() -> list[dict[str, Any]]:
            got = clients["sqs"].receive_message(QueueUrl=moto_env["PACS_LOCAL_EVENTS_QUEUE_URL"],
                                                 MaxNumberOfMessages=10, VisibilityTimeout=0)
            return [json.loads(m["Body"]) for m in got.get("Messages", [])]

        stored = wait_until(events, lambda e: len(e) == 6, what="6 events on the bus")
        kinds = sorted(e["detail-type"] for e in stored)
        assert kinds == ["InstanceStored"] * 3 + ["StudyUpdated"] * 3

        assert pacs_main(["dlq", "list"]) == 0  # the index queue's DLQ is empty
        assert capsys.readouterr().out == ""
    finally:
        assert pacs.stop() == 0, pacs.log_text()[-3000:]
