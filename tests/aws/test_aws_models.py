"""`mme models add|list` against moto S3 over HTTP."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from mme.aws.errors import ModelExistsError, UsageError
from mme.aws.model_store import (
    PROGRESS_MIN_BYTES,
    ModelUpload,
    S3Prefix,
    list_models,
    plan_uploads,
    upload_models,
)
from mme.aws.progress import ProgressBar
from mme.aws.session import Client
from tests.aws.aws_cli import REGION, make_archive, run_mme, text
from tests.aws.fake_aws import Faults


def _body(s3: Client, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_add_uploads_under_the_prefix_and_list_names_target_models(
    moto_url: str, s3: Client, bucket: str, tmp_path: Path
) -> None:
    first = make_archive(tmp_path / "resnet-v1.tar.gz", b"one")
    second = make_archive(tmp_path / "other.tar.gz", b"two")
    prefix = f"s3://{bucket}/mme/"

    added = run_mme("models", "add", prefix, str(first), "--endpoint-url", moto_url)
    named = run_mme(
        "models",
        "add",
        prefix,
        str(second),
        "--name",
        "team-a/bert-v1.tar.gz",
        "--endpoint-url",
        moto_url,
    )
    listed = run_mme("models", "list", prefix, "--endpoint-url", moto_url)

    assert added.returncode == 0, text(added.stderr)
    assert f"uploaded {prefix}resnet-v1.tar.gz" in text(added.stdout)
    assert named.returncode == 0, text(named.stderr)
    assert _body(s3, bucket, "mme/resnet-v1.tar.gz") == first.read_bytes()
    assert _body(s3, bucket, "mme/team-a/bert-v1.tar.gz") == second.read_bytes()
    assert listed.returncode == 0, text(listed.stderr)
    assert text(listed.stdout).split() == ["resnet-v1.tar.gz", "team-a/bert-v1.tar.gz"]


def test_add_refuses_to_overwrite_unless_asked(
    moto_url: str, s3: Client, bucket: str, tmp_path: Path
) -> None:
    prefix = f"s3://{bucket}/mme/"
    make_archive(tmp_path / "m.tar.gz", b"old")
    assert (
        run_mme(
            "models", "add", prefix, str(tmp_path / "m.tar.gz"), "--endpoint-url", moto_url
        ).returncode
        == 0
    )
    (tmp_path / "new").mkdir()
    newer = make_archive(tmp_path / "new" / "m.tar.gz", b"new")

    refused = run_mme("models", "add", prefix, str(newer), "--endpoint-url", moto_url)
    old_kept = _body(s3, bucket, "mme/m.tar.gz")
    forced = run_mme("models", "add", prefix, str(newer), "--overwrite", "--endpoint-url", moto_url)

    assert refused.returncode == 1
    assert f"{prefix}m.tar.gz already exist" in text(refused.stderr)
    assert "new name" in text(refused.stderr)
    assert "Traceback" not in text(refused.stderr)
    assert old_kept == (tmp_path / "m.tar.gz").read_bytes()
    assert forced.returncode == 0, text(forced.stderr)
    assert _body(s3, bucket, "mme/m.tar.gz") == newer.read_bytes()


def test_a_refused_batch_uploads_nothing(
    target_s3_prefix: S3Prefix, s3: Client, tmp_path: Path
) -> None:
    existing = make_archive(tmp_path / "a.tar.gz")
    fresh = make_archive(tmp_path / "b.tar.gz")
    upload_models(s3, target_s3_prefix, [ModelUpload(existing, "a.tar.gz")])

    with pytest.raises(ModelExistsError):
        upload_models(s3, target_s3_prefix, plan_uploads([fresh, existing], None))

    names = [m.target_model for m in list_models(s3, target_s3_prefix)]
    assert names == ["a.tar.gz"]


@pytest.fixture
def target_s3_prefix(bucket: str) -> S3Prefix:
    return S3Prefix.parse(f"s3://{bucket}/p/")


def test_large_uploads_show_progress_on_stderr(
    moto_url: str, s3: Client, bucket: str, tmp_path: Path
) -> None:
    # Random bytes do not compress, so the archive passes the progress threshold (multipart).
    big = make_archive(tmp_path / "big.tar.gz", os.urandom(PROGRESS_MIN_BYTES + 1024))

    added = run_mme("models", "add", f"s3://{bucket}/", str(big), "--endpoint-url", moto_url)

    assert added.returncode == 0, text(added.stderr)
    assert "big.tar.gz: " in text(added.stderr)  # tqdm's bar
    assert "100%" in text(added.stderr)
    assert s3.head_object(Bucket=bucket, Key="big.tar.gz")["ContentLength"] == big.stat().st_size


@pytest.mark.parametrize("size", [16, PROGRESS_MIN_BYTES + 1024], ids=["small", "multipart"])
def test_add_to_a_bucket_that_does_not_exist_says_so_in_one_line(
    moto_url: str, tmp_path: Path, size: int
) -> None:
    archive = make_archive(tmp_path / "m.tar.gz", os.urandom(size))

    added = run_mme("models", "add", "s3://no-such-bucket-here/mme/", str(archive),
                    "--endpoint-url", moto_url, "--overwrite")  # fmt: skip

    assert added.returncode == 1
    assert text(added.stderr) == (
        "mme models add: error: bucket no-such-bucket-here does not exist: create it in the "
        f"endpoint's region first (aws s3 mb s3://no-such-bucket-here --region {REGION})\n"
    )


def test_a_failed_upload_is_one_line_and_leaves_no_partial_upload(
    moto_url: str, s3: Client, bucket: str, tmp_path: Path, moto_faults: Faults
) -> None:
    small = make_archive(tmp_path / "a.tar.gz")
    big = make_archive(tmp_path / "big.tar.gz", os.urandom(PROGRESS_MIN_BYTES + 1024))
    moto_faults.failing_part_uploads.add(bucket)
    try:
        added = run_mme("models", "add", f"s3://{bucket}/mme/", str(small), str(big),
                        "--endpoint-url", moto_url, "--no-progress")  # fmt: skip
    finally:
        moto_faults.failing_part_uploads.discard(bucket)

    err = text(added.stderr)
    assert added.returncode == 1
    assert err.startswith(f"mme models add: error: uploading {big} to s3://{bucket}/mme/big.tar.gz")
    assert "AWS rejected the credentials for UploadPart (ExpiredToken)" in err
    assert f"already uploaded: s3://{bucket}/mme/a.tar.gz" in err
    assert err.count("\n") == 1
    assert [m.target_model for m in list_models(s3, S3Prefix.parse(f"s3://{bucket}/mme/"))] == [
        "a.tar.gz"
    ]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_progress_bar_counts_bytes_from_several_threads() -> None:
    stream = io.StringIO()
    bar = ProgressBar("m.tar.gz", 40_000, stream)
    threads = [threading.Thread(target=lambda: [bar(1) for _ in range(10_000)]) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counted = bar.done
    bar.finish()

    assert counted == 30_000
    assert "m.tar.gz: 100%" in stream.getvalue().replace("\r", "\n").splitlines()[-1]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://bucket/models", "must end with '/'"),
        ("https://bucket/models/", "must be an s3:// URL"),
        ("s3://B/models/", "valid S3 bucket"),
        ("s3://bucket/a//b/", "empty folder name"),
    ],
)
def test_prefix_validation(url: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        S3Prefix.parse(url)


def test_prefix_keys_concatenate_like_sagemaker() -> None:
    prefix = S3Prefix.parse("s3://bucket/mme/")
    root = S3Prefix.parse("s3://bucket/")

    assert prefix.key("sub/a.tar.gz") == "mme/sub/a.tar.gz"
    assert root.key("a.tar.gz") == "a.tar.gz"
    assert prefix.url == "s3://bucket/mme/"


def test_add_refuses_what_is_not_a_model_archive(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.tar.gz"
    notes.write_text("not a tar")
    archive = make_archive(tmp_path / "m.tar.gz")

    not_tar = run_mme("models", "add", f"s3://{bucket}/", str(notes), "--endpoint-url", moto_url)
    escaping = run_mme(
        "models",
        "add",
        f"s3://{bucket}/",
        str(archive),
        "--name",
        "../m.tar.gz",
        "--endpoint-url",
        moto_url,
    )
    bad_prefix = run_mme(
        "models", "add", f"s3://{bucket}", str(archive), "--endpoint-url", moto_url
    )

    assert not_tar.returncode == 2
    assert "is not a tar archive" in text(not_tar.stderr)
    assert escaping.returncode == 2
    assert "relative path" in text(escaping.stderr)
    assert bad_prefix.returncode == 2
    assert "must end with '/'" in text(bad_prefix.stderr)
