"""A stream written to S3 as one object by a multipart upload: what packed responses and export ZIPs
both do (no boto3 import here: the store brings its client)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pacs.storage.s3 import S3BlobStore

def pieces(data: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-chunk a stream into pieces of exactly `size` bytes (the last one shorter)."""
    buf = bytearray()
    for chunk in data:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def upload_s3(store: S3BlobStore, key: str, data: Iterable[bytes], content_type: str, *, part_size: int,
              tagging: str | None = None) -> None:
    """An S3 multipart upload of the stream in parts of `part_size` (S3's minimum is 5 MiB for all but
    the last), aborted on any failure: no partial object."""
    client, bucket = store.client, store.bucket_for(key)
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentType": content_type}
    if tagging is not None:
        args["Tagging"] = tagging
    if store.kms_key_id:
        args.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=store.kms_key_id)
    upload_id = client.create_multipart_upload(**args)["UploadId"]
    try:
        parts = []
        for number, piece in enumerate(pieces(data, part_size), start=1):
            resp = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                      Body=piece)
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
