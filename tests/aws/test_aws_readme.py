"""What the README's deploy section promises a new user, checked against the commands."""

from __future__ import annotations

import os

from tests.aws.aws_cli import run_mme, text
from tests.aws.readme import deploy_section


def test_the_bucket_must_exist_and_the_readme_says_so() -> None:
    section = deploy_section()

    assert "The bucket must exist" in section
    assert "aws s3 mb" in section


def test_aws_endpoint_url_is_documented_and_works_without_the_option(
    moto_url: str, bucket: str
) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url}

    listed = run_mme("models", "list", f"s3://{bucket}/", env=env)

    assert listed.returncode == 0, text(listed.stderr)
    assert "AWS_ENDPOINT_URL" in deploy_section()


def test_the_readme_sends_local_invokes_to_mme_endpoint_not_to_moto() -> None:
    section = deploy_section()

    assert "mme endpoint --model-data-url s3://my-bucket/mme/ --s3-endpoint-url" in section
    assert "moto" in section and "stub" in section
