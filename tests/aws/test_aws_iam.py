"""The README's IAM policy is enough for every command, failure paths included.

moto checks IAM when asked to (its `reset-auth` switch): an IAM user holding exactly the
README's policy runs the commands, and any call that the policy does not allow is refused
as AWS would refuse it. The flow takes every path that calls AWS: an upload that fails
half-way (boto3 then aborts the multipart upload), a deploy that fails and undoes itself, an
update, autoscaling and teardown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from mme.aws.model_store import PROGRESS_MIN_BYTES
from mme.aws.session import AwsTarget, Client
from tests.aws.aws_cli import deploy_args, make_archive, resource_names, run_mme, text
from tests.aws.fake_aws import Faults
from tests.aws.readme import deployer_policy


def _deployer_env(target: AwsTarget, bucket: str) -> dict[str, str]:
    """The environment of an IAM user whose only policy is the README's."""
    iam = target.client("iam")
    user = f"deployer-{bucket}"
    iam.create_user(UserName=user)
    policy = deployer_policy(bucket)
    iam.put_user_policy(UserName=user, PolicyName="mme-deploy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    env = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"}
    env.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    return env


@contextmanager
def iam_enforced(moto_url: str) -> Iterator[None]:
    """moto checks every request against IAM while the block runs."""
    switch = f"{moto_url}/moto-api/reset-auth"
    previous = requests.post(switch, data=b"0", timeout=10).json()
    try:
        yield
    finally:
        requests.post(
            switch, data=previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode(), timeout=10
        )


def test_the_readme_policy_allows_every_call_of_every_command(
    moto_url: str,
    target: AwsTarget,
    s3: Client,
    sagemaker: Client,
    bucket: str,
    endpoint_name: str,
    tmp_path: Path,
    moto_faults: Faults,
) -> None:
    env = _deployer_env(target, bucket)
    prefix = f"s3://{bucket}/mme/"
    small = make_archive(tmp_path / "m.tar.gz")
    big = make_archive(tmp_path / "big.tar.gz", os.urandom(PROGRESS_MIN_BYTES + 1024))
    deploy = deploy_args(endpoint_name, moto_url, prefix)
    at = ["--endpoint-url", moto_url]

    def mme(*args: str) -> tuple[int, str]:
        result = run_mme(*args, env=env)
        return result.returncode, text(result.stderr)

    moto_faults.failing_part_uploads.add(bucket)
    try:
        with iam_enforced(moto_url):
            failed_upload = mme("models", "add", prefix, str(big), *at, "--no-progress")
            moto_faults.failing_part_uploads.discard(bucket)
            steps = [
                mme("models", "add", prefix, str(small), *at),
                mme("models", "list", prefix, *at),
                mme(*deploy),
                mme(*deploy_args(endpoint_name, moto_url, f"{prefix}v2/"), "--update"),
                mme("autoscale", endpoint_name, *at),
                mme("teardown", endpoint_name, *at, "--poll-interval", "0"),
            ]
            failed_deploy = mme(*deploy, "--instance-type", "ml.m5.bogus")
    finally:
        moto_faults.failing_part_uploads.discard(bucket)

    for status, err in steps:
        assert status == 0, err
    for status, err in (failed_upload, failed_deploy):
        assert status == 1 and "permission denied" not in err, err
    assert "ExpiredToken" in failed_upload[1] and "UploadPart" in failed_upload[1]
    # The aborted multipart upload is gone (s3:AbortMultipartUpload), nothing is left over.
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert resource_names(sagemaker, endpoint_name) == ([], [])
