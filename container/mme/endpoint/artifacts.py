"""Where model archives come from: ModelDataUrl prefix + TargetModel, in S3 or a local folder.

As on SageMaker, the archive's location is the prefix and the TargetModel joined as
plain strings (``s3://b/mme/`` + ``sub/a.tar.gz``). A missing archive is the caller's
mistake (400 ValidationError); a store that cannot be reached is not (530). In a local
folder, a TargetModel that S3 would take for another key (``/a.tar.gz``, ``./a.tar.gz``,
``sub/../a.tar.gz``) finds nothing either, and the error says why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mme.endpoint.errors import InternalDependencyError, ValidationError
from mme.sagemaker_contract import (
    ARCHIVE_SUFFIX,
    S3_DENIED_CODES,
    S3_MISSING_BUCKET_CODE,
    S3_MISSING_OBJECT_CODES,
    S3_SCHEME,
    s3_error_code,
    split_s3_url,
    target_model_key_problem,
)

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024


class ArtifactStore(Protocol):
    """A ModelDataUrl prefix that archives can be fetched from."""

    def url(self, target_model: str) -> str:
        """The archive's full location (prefix + TargetModel)."""

    def fetch(self, target_model: str, destination: Path, max_bytes: int) -> int:
        """Copy the archive to ``destination``; return its size in bytes."""

    def examples(self, limit: int) -> list[str]:
        """A few TargetModel values that exist under the prefix (for the startup hints)."""


def _too_big(url: str, max_bytes: int) -> ValidationError:
    return ValidationError(f"Model data at {url} is larger than the limit of {max_bytes} bytes.")


def _copy_bounded(source: BinaryIO, destination: Path, max_bytes: int, url: str) -> int:
    copied = 0
    with open(destination, "wb") as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            copied += len(chunk)
            if copied > max_bytes:
                raise _too_big(url, max_bytes)
            out.write(chunk)
    return copied


class LocalStore:
    """Archives in a local folder: the prefix is the folder, TargetModel a path inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def url(self, target_model: str) -> str:
        """The archive's path: prefix + "/" + TargetModel, joined as plain strings."""
        return f"{self.root}/{target_model}"

    def _path(self, target_model: str) -> Path:
        url = self.url(target_model)
        problem = target_model_key_problem(target_model)
        if problem is not None:
            raise ValidationError(
                f"Could not find model data at {url}: TargetModel {target_model!r} {problem}."
            )
        path = Path(url).resolve()
        if not path.is_relative_to(self.root):  # through a link inside the prefix
            raise ValidationError(
                f"Could not find model data at {url}: it leads outside the ModelDataUrl prefix."
            )
        if not path.is_file():
            raise ValidationError(f"Could not find model data at {url}.")
        return path

    def fetch(self, target_model: str, destination: Path, max_bytes: int) -> int:
        """Copy the archive to ``destination`` (so a rebuilt source cannot change it midway)."""
        path = self._path(target_model)
        with open(path, "rb") as source:
            return _copy_bounded(source, destination, max_bytes, str(path))

    def examples(self, limit: int) -> list[str]:
        """Archive names under the folder, nearest first."""
        found = sorted(
            self.root.rglob(f"*{ARCHIVE_SUFFIX}"),
            key=lambda p: (len(p.relative_to(self.root).parts), str(p)),
        )
        return [str(p.relative_to(self.root)) for p in found[:limit]]


class S3Store:
    """Archives under an S3 prefix, read with boto3 (any S3-compatible store via endpoint_url)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    def url(self, target_model: str) -> str:
        """``s3://bucket/prefix`` + TargetModel."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}{target_model}"

    def fetch(self, target_model: str, destination: Path, max_bytes: int) -> int:
        """Stream the object to ``destination``; a missing key is a ValidationError."""
        from botocore.exceptions import BotoCoreError, ClientError

        url = self.url(target_model)
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + target_model)
            if int(answer.get("ContentLength") or 0) > max_bytes:
                raise _too_big(url, max_bytes)
            with answer["Body"] as body:
                return _copy_bounded(body, destination, max_bytes, url)
        except ClientError as exc:
            code = s3_error_code(exc)
            if code in S3_MISSING_OBJECT_CODES or code == S3_MISSING_BUCKET_CODE:
                raise ValidationError(f"Could not find model data at {url}.") from exc
            if code in S3_DENIED_CODES:
                raise ValidationError(f"Access denied to model data at {url}.") from exc
            raise InternalDependencyError(f"Could not read {url}: {exc}") from exc
        except BotoCoreError as exc:
            raise InternalDependencyError(f"Could not read {url}: {exc}") from exc

    def examples(self, limit: int) -> list[str]:
        """Up to ``limit`` archive keys under the prefix (first page only); [] if unreadable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1000)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("cannot list %s: %s", self.url(""), exc)
            return []
        keys = [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return [key for key in keys if key.endswith(ARCHIVE_SUFFIX)][:limit]


def open_store(model_data_url: str, s3_endpoint_url: str | None, region: str) -> ArtifactStore:
    """The store for ``model_data_url``: ``s3://bucket/prefix`` or a local folder."""
    if model_data_url.startswith(S3_SCHEME):
        import boto3
        from botocore.config import Config

        bucket, prefix = split_s3_url(model_data_url)
        if not bucket:
            raise ValueError(f"{model_data_url!r} names no bucket")
        if prefix and not prefix.endswith("/"):
            logger.warning(
                "ModelDataUrl %s does not end with '/': TargetModel is appended to it "
                "as is, as SageMaker does",
                model_data_url,
            )
        config = Config(
            connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=s3_endpoint_url, region_name=region, config=config
        )
        return S3Store(bucket, prefix, client)
    if "://" in model_data_url:
        raise ValueError(f"{model_data_url!r}: use s3://bucket/prefix/ or a local folder")
    root = Path(model_data_url).expanduser()
    if not root.is_dir():
        raise ValueError(f"{model_data_url!r} is not a folder")
    return LocalStore(root)
