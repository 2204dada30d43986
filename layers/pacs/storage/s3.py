"""S3 BlobStore: objects in one bucket, or derived data (`{partition}/derived/…`) in a second one;
notifications come from the bucket itself (S3 → SQS)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pacs.errors import NotFound, StorageFailure
from pacs.monitoring.metrics import object_store_error
from pacs.storage.port import AlreadyExists, BlobInfo


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        *,
        derived_bucket: str | None = None,
        client: Any | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        self.bucket = bucket
        #: Where keys `{partition}/derived/…` live (frames, metadata, packed bodies); the same bucket
        #: when None.
        self.derived_bucket = derived_bucket or bucket
        self.kms_key_id = kms_key_id
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            # SigV4 always: presigned GETs of KMS-encrypted objects require it.
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"}, tcp_keepalive=True, signature_version="s3v4"
            ),
        )

    def bucket_for(self, key: str) -> str:
        """The bucket holding `key`: derived data in the derived bucket, everything else in the main one."""
        parts = key.split("/", 2)
        return self.derived_bucket if len(parts) == 3 and parts[1] == "derived" else self.bucket

    def _buckets_for_prefix(self, prefix: str) -> list[str]:
        """The buckets whose keys may start with `prefix` (both when it stops before `derived/` could
        be told apart from other folders, e.g. `default/`)."""
        if self.derived_bucket == self.bucket:
            return [self.bucket]
        parts = prefix.split("/", 2)
        if len(parts) == 3:
            return [self.bucket_for(prefix)]
        if len(parts) == 2 and not "derived".startswith(parts[1]):
            return [self.bucket]
        return [self.bucket, self.derived_bucket]

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str = "application/dicom",
        if_absent: bool = False,
    ) -> BlobInfo:
        args: dict[str, Any] = {
            "Bucket": self.bucket_for(key), "Key": key, "Body": data, "ContentType": content_type}
        if if_absent:
            args["IfNoneMatch"] = "*"
        if self.kms_key_id:
            args.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self.kms_key_id)
        try:
            resp = self.client.put_object(**args)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if if_absent and code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise AlreadyExists(key) from None
            raise StorageFailure(f"could not store {key}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageFailure(f"could not store {key}: {exc}") from exc
        size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else cast(int, data.tell())
        return BlobInfo(key=key, size=size, etag=resp["ETag"].strip('"'), version_id=resp.get("VersionId"))

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/dicom", if_absent: bool = False
    ) -> BlobInfo:
        """Stream a local file to S3 (one PUT: objects up to 5 GB)."""
        with open(path, "rb") as fh:
            info = self.put(key, fh, content_type=content_type, if_absent=if_absent)
        return BlobInfo(key, path.stat().st_size, info.etag, info.version_id)

    def head(self, key: str) -> BlobInfo | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket_for(key), Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            object_store_error("head")
            raise
        return BlobInfo(
            key=key,
            size=int(resp["ContentLength"]),
            etag=resp["ETag"].strip('"'),
            version_id=resp.get("VersionId"),
            sequencer=f"{int(resp['LastModified'].timestamp() * 1e9):020X}",
        )

    def _get(self, key: str, **extra: Any) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket_for(key), Key=key, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise NotFound(f"no object {key}") from None
            object_store_error("get")
            raise

    def open(self, key: str) -> BinaryIO:
        """A seekable reader doing ranged GETs, so a header parse reads only the header."""
        head = self.head(key)
        if head is None:
            raise NotFound(f"no object {key}")
        return cast(BinaryIO, _RangedReader(self, key, head.size))

    def get(self, key: str) -> bytes:
        return cast(bytes, self._get(key)["Body"].read())

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object."""
        return cast(bytes, self._get(key, Range=f"bytes={start}-{end - 1}")["Body"].read())

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        body = self._get(key)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket_for(key), Key=key)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Keys in order; from both buckets (merged) when the prefix may span them."""
        listings = [self._list(bucket, prefix) for bucket in self._buckets_for_prefix(prefix)]
        yield from listings[0] if len(listings) == 1 else heapq.merge(*listings, key=lambda b: b.key)

    def _list(self, bucket: str, prefix: str) -> Iterator[BlobInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                info = BlobInfo(key=obj["Key"], size=int(obj["Size"]), etag=obj["ETag"].strip('"'))
                if self.bucket_for(info.key) == bucket:  # a stray key in the wrong bucket is not ours
                    yield info

    def presigned_get(self, key: str, expires: int = 900) -> str:
        """A presigned GET URL (no request is made: the object need not exist yet)."""
        return cast(str, self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket_for(key), "Key": key}, ExpiresIn=expires))


class _RangedReader:
    """A read-only, seekable file over an S3 object, fetching ranges with read-ahead."""

    def __init__(self, store: S3BlobStore, key: str, size: int, block: int = 64 * 1024) -> None:
        self.store, self.key, self.size, self.block = store, key, size, block
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        end = min(self.pos + n, self.size)
        if end <= self.pos:
            return b""
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= self.pos and end <= buf_end):
            fetch_end = min(max(end, self.pos + self.block), self.size)
            self._buf = self.store.read_range(self.key, self.pos, fetch_end)
            self._buf_start = self.pos
        out = self._buf[self.pos - self._buf_start : end - self._buf_start]
        self.pos += len(out)
        return out

    def close(self) -> None:
        self._buf = b""

    def __enter__(self) -> _RangedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
