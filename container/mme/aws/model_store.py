"""The endpoint's S3 prefix: validate it, upload model.tar.gz files to it, list its models.

A multi-model endpoint serves ``prefix + TargetModel`` and may keep a copy cached after the
object changes, so an existing key is never overwritten unless the caller insists.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError

from mme import sagemaker_contract as contract
from mme.aws.errors import DeployCommandError, ModelExistsError, UsageError, raise_in_context
from mme.aws.progress import ProgressBar
from mme.aws.session import Client

PROGRESS_MIN_BYTES = 8 * 1024 * 1024  # boto3 switches to multipart uploads at this size


class BucketNotFoundError(DeployCommandError):
    """The prefix's bucket does not exist; nothing creates it for the user."""


@dataclass(frozen=True)
class S3Prefix:
    """An ``s3://bucket/prefix/`` URL: the ModelDataUrl of a multi-model endpoint."""

    bucket: str
    key_prefix: str  # "" for the bucket's root, else it ends with "/"

    @classmethod
    def parse(cls, url: str) -> S3Prefix:
        """Validate ``url`` as a multi-model prefix; raises UsageError saying what is wrong."""
        example = "such as s3://my-bucket/models/"
        try:
            bucket, key_prefix = contract.split_s3_url(url)
        except ValueError:
            raise UsageError(f"model data URL {url!r} must be an s3:// URL, {example}") from None
        if not url.endswith("/"):
            raise UsageError(
                f"model data URL {url!r} must end with '/': a multi-model endpoint reads "
                f"<prefix><TargetModel>, so the prefix is a folder, {example}"
            )
        limit = contract.MAX_MODEL_DATA_URL_CHARS
        if len(url) > limit:
            raise UsageError(f"model data URL is {len(url)} characters; the limit is {limit}")
        if not contract.BUCKET_NAME.match(bucket):
            raise UsageError(f"model data URL {url!r} does not name a valid S3 bucket")
        if "//" in key_prefix:
            raise UsageError(f"model data URL {url!r} has an empty folder name ('//')")
        return cls(bucket, key_prefix)

    @property
    def url(self) -> str:
        """The prefix as an s3:// URL, as CreateModel's ModelDataUrl wants it."""
        return f"{contract.S3_SCHEME}{self.bucket}/{self.key_prefix}"

    def key(self, target_model: str) -> str:
        """The S3 key that serves ``target_model``."""
        return self.key_prefix + target_model


@dataclass(frozen=True)
class ModelUpload:
    """One archive to upload, and the TargetModel name it will be invoked by."""

    path: Path
    target_model: str


@dataclass(frozen=True)
class StoredModel:
    """A model under the prefix: its TargetModel name, size and last change."""

    target_model: str
    size: int
    last_modified: str


def plan_uploads(paths: Sequence[Path], name: str | None) -> list[ModelUpload]:
    """Pair each archive with its TargetModel: the file name, or ``name`` for a single file."""
    if name is not None and len(paths) != 1:
        raise UsageError("--name gives one archive its TargetModel; pass exactly one file")
    uploads = [ModelUpload(path, name if name is not None else path.name) for path in paths]
    for upload in uploads:
        _check_archive(upload.path)
        check_target_model(upload.target_model)
    targets = [upload.target_model for upload in uploads]
    duplicates = sorted({target for target in targets if targets.count(target) > 1})
    if duplicates:
        raise UsageError(f"two files would be uploaded as {', '.join(duplicates)}")
    return uploads


def check_target_model(target_model: str) -> None:
    """Refuse names that InvokeEndpoint's TargetModel cannot carry, or that escape the prefix."""
    problem = contract.target_model_problem(target_model)
    if problem is not None:
        raise UsageError(f"a TargetModel name {problem}")
    problem = contract.target_model_key_problem(target_model)
    if problem is not None:
        raise UsageError(
            f"TargetModel {target_model!r} must be a relative path like team-a/m.tar.gz: "
            f"it {problem}"
        )
    suffix = contract.ARCHIVE_SUFFIX
    if not target_model.endswith(suffix):
        raise UsageError(
            f"TargetModel {target_model!r} must end with {suffix}, as SageMaker expects"
        )


def _check_archive(path: Path) -> None:
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    if not tarfile.is_tarfile(path):
        raise UsageError(f"{path} is not a tar archive; build it with `mme package`")


def upload_models(
    s3: Client,
    prefix: S3Prefix,
    uploads: Sequence[ModelUpload],
    overwrite: bool = False,
    progress: Callable[[str, int], ProgressBar | None] | None = None,
) -> list[str]:
    """Upload ``uploads`` under ``prefix``; returns their s3:// URLs.

    The bucket and every key are checked before anything is uploaded, so a refused batch
    uploads nothing. ``progress(label, size)`` may return a ProgressBar to feed.
    """
    check_bucket(s3, prefix)
    if not overwrite:
        taken = [
            u.target_model
            for u in uploads
            if _exists(s3, prefix.bucket, prefix.key(u.target_model))
        ]
        if taken:
            raise ModelExistsError(
                f"{', '.join(prefix.url + t for t in taken)} already exist(s). An endpoint may "
                "still serve a cached copy of the old model, so upload the new version under a "
                "new name (e.g. resnet-v2.tar.gz), or pass --overwrite if no endpoint has used it."
            )
    urls: list[str] = []
    for upload in uploads:
        key = prefix.key(upload.target_model)
        bar = progress(upload.target_model, upload.path.stat().st_size) if progress else None
        try:
            s3.upload_file(str(upload.path), prefix.bucket, key, Callback=bar)
        except S3UploadFailedError as exc:
            # boto3 has aborted a failed multipart upload by now (s3:AbortMultipartUpload).
            done = f" (already uploaded: {', '.join(urls)})" if urls else ""
            where = f"uploading {upload.path} to {prefix.url}{upload.target_model}: "
            raise_in_context(exc, before=where, after=done)
        if bar is not None:
            bar.finish()
        urls.append(f"{contract.S3_SCHEME}{prefix.bucket}/{key}")
    return urls


def check_bucket(s3: Client, prefix: S3Prefix) -> None:
    """Raise BucketNotFoundError, saying how to make it, when the bucket does not exist."""
    # ListObjectsV2 needs s3:ListBucket, as listing does (and as HeadBucket would).
    with _missing_bucket(s3, prefix.bucket):
        s3.list_objects_v2(Bucket=prefix.bucket, Prefix=prefix.key_prefix, MaxKeys=1)


def large_file_progress(label: str, size: int) -> ProgressBar | None:
    """A ProgressBar on stderr for files big enough to take a while, else None."""
    return ProgressBar(label, size) if size >= PROGRESS_MIN_BYTES else None


def _exists(s3: Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if contract.s3_error_code(exc) in contract.S3_MISSING_OBJECT_CODES:
            return False
        raise
    return True


def list_models(s3: Client, prefix: S3Prefix) -> list[StoredModel]:
    """The models under ``prefix``, named as InvokeEndpoint's TargetModel expects them."""
    models = []
    paginator = s3.get_paginator("list_objects_v2")
    with _missing_bucket(s3, prefix.bucket):
        pages = list(paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key_prefix))
    for page in pages:
        for item in page.get("Contents", []):
            target_model = item["Key"][len(prefix.key_prefix) :]
            if target_model and not target_model.endswith("/"):  # skip folder markers
                models.append(
                    StoredModel(target_model, int(item["Size"]), item["LastModified"].isoformat())
                )
    return models


@contextmanager
def _missing_bucket(s3: Client, bucket: str) -> Iterator[None]:
    """Turn S3's NoSuchBucket into a message that says how to create the bucket."""
    try:
        yield
    except ClientError as exc:
        if contract.s3_error_code(exc) != contract.S3_MISSING_BUCKET_CODE:
            raise
        raise BucketNotFoundError(
            f"bucket {bucket} does not exist: create it in the endpoint's region first "
            f"(aws s3 mb s3://{bucket} --region {s3.meta.region_name})"
        ) from None
