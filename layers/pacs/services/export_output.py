"""Where an export task writes its de-identified instances: Part 10 files in the exports store (the
`files` and `zip` destinations), another partition (ingested: indexed and searchable), or a remote node
(C-STORE). One instance refused by the destination fails alone (its reason returned); anything else
(the store or the node unreachable) raises, and the task is delivered again.

    {partition}/export/{job}/files/{StudyUID}/{SeriesUID}/{SOPUID}.dcm     (de-identified UIDs)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from pacs.catalog.nodes import NodeRegistry
from pacs.deid import Deidentified
from pacs.dicom.uids import check_uid
from pacs.errors import InvalidDataset, InvalidUID, PacsError, StorageFailure
from pacs.storage.keys import check_partition
from pacs.storage.port import BlobStore


class PermanentExportFailure(Exception):
    """A task that can never succeed (unknown job, a destination that is gone): not retried."""


class Output(Protocol):
    def add(self, sop_uid: str, out: Deidentified) -> str | None:
        """Write one instance (`sop_uid`: the original's); None when written, else why it was refused."""
        ...

    def flush(self) -> dict[str, str]:
        """Finish the task's writes; {original SOP UID: reason} of those refused now."""
        ...

    def close(self) -> None: ...


def export_prefix(partition: str, job_id: str) -> str:
    return f"{check_partition(partition)}/export/{job_id}/"


def files_prefix(partition: str, job_id: str) -> str:
    return export_prefix(partition, job_id) + "files/"


def file_key(partition: str, job_id: str, out: Deidentified) -> str:
    study = check_uid(out.study_uid, "StudyInstanceUID")
    series = check_uid(out.series_uid, "SeriesInstanceUID")
    sop = check_uid(out.sop_uid, "SOPInstanceUID")
    return f"{files_prefix(partition, job_id)}{study}/{series}/{sop}.dcm"


class FilesOutput:
    """Part 10 files in the exports store (for `files`, and for `zip` until the archive is made)."""

    def __init__(self, store: BlobStore, partition: str, job_id: str) -> None:
        self.store, self.partition, self.job_id = store, partition, job_id

    def add(self, sop_uid: str, out: Deidentified) -> str | None:
        try:
            key = file_key(self.partition, self.job_id, out)
        except (InvalidUID, ValueError) as exc:
            return f"de-identified UIDs unusable as a key: {exc}"
        self.store.put(key, out.data)  # StorageFailure: the task is retried
        return None

    def flush(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


class PartitionOutput:
    """Ingested into another partition (stored and indexed: searchable at once)."""

    def __init__(self, backend: Any, partition: str) -> None:
        from pacs.services.indexer import IndexerService
        from pacs.services.ingest import DuplicatePolicy, IngestService

        self.ingest = IngestService(
            backend.store, partition=partition, duplicate_policy=DuplicatePolicy.REPLACE,
            indexer=IndexerService(backend.store, backend.catalog, backend.events))

    def add(self, sop_uid: str, out: Deidentified) -> str | None:
        try:
            self.ingest.ingest(out.data)
        except StorageFailure:
            raise
        except (InvalidDataset, InvalidUID) as exc:
            return f"refused by ingest: {exc}"
        except PacsError as exc:
            if exc.http_status >= 500:
                raise
            return f"refused by ingest: {exc}"
        return None

    def flush(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


class NodeOutput:
    """C-STORE to a registered node: the task's instances spooled to files, then sent on one
    association (its contexts proposed from what was de-identified)."""

    def __init__(self, nodes: NodeRegistry | None, ae_title: str, calling_ae: str, *, max_pdu: int,
                 timeout: float, spool_dir: Path | None = None) -> None:
        node = None if nodes is None else nodes.get_node(ae_title)
        if node is None:
            raise PermanentExportFailure(f"the destination node {ae_title!r} is no longer registered")
        self.node, self.calling_ae, self.max_pdu, self.timeout = node, calling_ae, max_pdu, timeout
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="export-node-", dir=spool_dir))
        self.files: list[tuple[str, Path, tuple[str, str]]] = []

    def add(self, sop_uid: str, out: Deidentified) -> str | None:
        path = self.dir / f"{len(self.files)}.dcm"
        path.write_bytes(out.data)
        self.files.append((sop_uid, path, (out.sop_class_uid, out.transfer_syntax_uid)))
        return None

    def flush(self) -> dict[str, str]:
        from pacs.dimse.sender import SendError, StoreSender

        refused: dict[str, str] = {}
        if not self.files:
            return refused
        with StoreSender(self.node, self.calling_ae, [p for _, _, p in self.files], max_pdu=self.max_pdu,
                         timeout=self.timeout) as sender:  # SendError here: not reached, retried
            for sop, path, _ in self.files:
                try:
                    status = sender.send(path)
                except SendError as exc:
                    if not sender.established:
                        raise  # the association is gone: the task again
                    refused[sop] = f"not sent to {self.node.ae_title}: {exc}"
                    continue
                if status != 0 and status >> 12 != 0xB:
                    refused[sop] = f"{self.node.ae_title} answered C-STORE status 0x{status:04X}"
        return refused

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
