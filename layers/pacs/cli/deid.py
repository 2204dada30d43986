"""`pacs deid secret` (where the de-identification secret is; made if absent, never printed) and
`pacs deid reidentify PSEUDONYM --project P` (the originals a pseudonym stands for, from the encrypted
crosswalk `pacs anonymize --crosswalk` and the anonymizer record).

The secret (`pacs.deid.secrets`): `--secret-file F`, else PACS_DEID_SECRET (a file, or on the aws backend a
Secrets Manager ARN or SSM parameter name), else DATA_DIR/deid/secret.key. The crosswalk lives in the data
directory's object store (aws backend: the exports bucket, else the main bucket), under
`{partition}/export/crosswalk/{project}/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pacs.config import Settings
from pacs.deid.options import DeidError
from pacs.deid.secrets import FileSecret, ParameterSecret, SecretsManagerSecret, secret_source
from pacs.storage.port import BlobStore

Source = FileSecret | SecretsManagerSecret | ParameterSecret


def add_secret_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say where the secret (and the crosswalk) are."""
    p.add_argument("--secret-file", type=Path, default=None,
                   help="the master secret file (default: PACS_DEID_SECRET, else DATA_DIR/deid/secret.key)")
    p.add_argument("--data-dir", type=Path, default=None, help="the data directory (./pacs-data)")
    p.add_argument("--backend", choices=["embedded", "aws"], default=None)
    p.add_argument("--endpoint-url", default=None, help="aws backend: the endpoint (moto)")
    p.add_argument("--partition", default=None, help="the crosswalk's partition (default)")


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings.from_env(data_dir=args.data_dir, backend=args.backend, endpoint_url=args.endpoint_url,
                             partition=args.partition)


class Usage(Exception):
    """A command-line mistake: printed, exit status 2."""


def find_secret(args: argparse.Namespace, settings: Settings, *, create: bool) -> Source:
    """The secret's source. `create`: the data dir's file may be made (never a file named with
    --secret-file or PACS_DEID_SECRET: a mistyped name must not silently start new pseudonyms)."""
    from pacs.cli.storage import explicit_data_dir

    if args.secret_file is not None:
        if not args.secret_file.is_file():
            raise Usage(f"--secret-file {args.secret_file}: no such file (`pacs deid secret` makes one in "
                        "the data directory)")
        return FileSecret(args.secret_file)
    source = secret_source(settings)
    if isinstance(source, FileSecret) and not source.exists():
        if settings.deid_secret:
            raise Usage(f"PACS_DEID_SECRET names {source.path}, which does not exist")
        if not create:
            raise Usage(f"no de-identification secret at {source.path.resolve()} (`pacs deid secret "
                        f"--data-dir {settings.data_dir}` makes one)")
        if not settings.data_dir.is_dir() and not explicit_data_dir(args):
            raise Usage(f"no data directory ./{settings.data_dir} here: pass --data-dir DIR or --secret-file "
                        "F (or set PACS_DATA_DIR or PACS_DEID_SECRET)")
    return source


def crosswalk_store(settings: Settings, *, create: bool) -> BlobStore:
    """Where the crosswalk is kept: the data directory's objects, or the exports (else main) bucket.
    `create`: the data directory may be made (to write to it)."""
    if settings.backend == "aws":
        from pacs.storage.s3 import S3BlobStore

        bucket = settings.exports_bucket or settings.bucket
        if not bucket:
            raise Usage("the aws backend needs PACS_EXPORTS_BUCKET or PACS_BUCKET for the crosswalk")
        return S3BlobStore(bucket, endpoint_url=settings.endpoint_url or None, region=settings.region)
    from pacs.storage.filesystem import FilesystemBlobStore

    if not create and not (settings.data_dir / "objects").is_dir():
        raise Usage(f"no data directory {settings.data_dir.resolve()} (its crosswalk is read from "
                    f"{settings.data_dir / 'objects'})")
    return FilesystemBlobStore(settings.data_dir / "objects")


def register(sub: Any) -> None:
    p = sub.add_parser("deid", help="de-identification: the secret, re-identification by the crosswalk",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("secret", help="say where the de-identification secret is (made if absent)")
    add_secret_arguments(s)
    s.set_defaults(fn=cmd_secret)
    r = actions.add_parser("reidentify", help="the originals a pseudonym stands for (from the crosswalk)")
    r.add_argument("pseudonym", help="a pseudonym: a replaced UID, patient ID or name")
    r.add_argument("--project", required=True, help="the project the pseudonym was made for")
    add_secret_arguments(r)
    r.set_defaults(fn=cmd_reidentify)


def _fail(message: str, code: int) -> int:
    print(f"pacs deid: {message}", file=sys.stderr, flush=True)
    return code


def cmd_secret(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        source = find_secret(args, settings, create=True)
        existed = not isinstance(source, FileSecret) or source.exists()
        source.master()  # made if absent, and checked: readable, private, strong enough
    except Usage as exc:
        return _fail(str(exc), 2)
    except DeidError as exc:
        return _fail(str(exc), 1)
    print(f"the de-identification secret is {source.describe()}" + ("" if existed else " (made now)"))
    return 0


def cmd_reidentify(args: argparse.Namespace) -> int:
    from pacs.deid.crosswalk import Crosswalk
    from pacs.deid.secrets import project_key

    settings = settings_of(args)
    try:
        source = find_secret(args, settings, create=False)
        store = crosswalk_store(settings, create=False)
        key = project_key(source.master(), args.project)
        crosswalk = Crosswalk(store, settings.partition, args.project, key)
        found = crosswalk.lookup(args.pseudonym)
    except Usage as exc:
        return _fail(str(exc), 2)
    except (DeidError, ValueError) as exc:
        return _fail(str(exc), 1)
    if not found:
        return _fail(f"{args.pseudonym!r} is not in the crosswalk of project {args.project!r} "
                     f"(partition {settings.partition})", 1)
    for kind, original in found:
        print(f"{kind}\t{original}")
    return 0
