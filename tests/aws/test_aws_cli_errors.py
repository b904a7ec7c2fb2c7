"""What users see when credentials, region, network or permissions are wrong; --help."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from mme.aws.errors import EXIT_FAILURE, explain
from mme.cli import build_parser
from tests.aws.aws_cli import deploy_args, make_archive, run_mme, text

NO_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture
def no_credentials_env(aws_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The test environment without any credentials: empty AWS files, no metadata lookups."""
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in NO_CREDENTIAL_VARS}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        HOME=str(tmp_path),  # no ~/.aws/sso or login caches either
    )
    return env


def test_missing_credentials_give_a_clear_message(
    moto_url: str, bucket: str, tmp_path: Path, no_credentials_env: dict[str, str]
) -> None:
    archive = make_archive(tmp_path / "m.tar.gz")

    add = run_mme(
        "models", "add", f"s3://{bucket}/", str(archive), "--endpoint-url", moto_url,
        env=no_credentials_env,
    )  # fmt: skip
    deploy = run_mme(
        *deploy_args("ep-no-creds", moto_url, f"s3://{bucket}/"), env=no_credentials_env
    )

    for result, command in ((add, "models add"), (deploy, "deploy")):
        err = text(result.stderr)
        assert result.returncode == EXIT_FAILURE, err
        assert err.startswith(f"mme {command}: error: no usable AWS credentials"), err
        assert "AWS_ACCESS_KEY_ID" in err and "--profile" in err
        assert "Traceback" not in err


def test_an_unknown_profile_and_a_missing_region_are_named(
    moto_url: str, no_credentials_env: dict[str, str]
) -> None:
    no_region = {k: v for k, v in no_credentials_env.items() if "REGION" not in k}

    profile = run_mme(
        "models", "list", "s3://bucket-x/", "--profile", "nobody", "--endpoint-url", moto_url,
        env=no_credentials_env,
    )  # fmt: skip
    region = run_mme("teardown", "ep", "--endpoint-url", moto_url, env=no_region)

    assert profile.returncode == 2
    assert "nobody" in text(profile.stderr) and "--profile" in text(profile.stderr)
    assert region.returncode == 2
    assert "no AWS region: pass --region" in text(region.stderr)


def test_an_unreachable_endpoint_url_is_reported(aws_env: dict[str, str]) -> None:
    with socket.socket() as sock:  # a port that nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = run_mme(
        "models", "list", "s3://bucket-x/", "--endpoint-url", f"http://127.0.0.1:{port}"
    )

    assert result.returncode == 1
    assert "cannot reach the service" in text(result.stderr)
    assert f"127.0.0.1:{port}" in text(result.stderr)


def test_a_missing_bucket_is_named(moto_url: str) -> None:
    result = run_mme("models", "list", "s3://no-such-bucket-here/", "--endpoint-url", moto_url)

    assert result.returncode == 1
    assert text(result.stderr).startswith(
        "mme models list: error: bucket no-such-bucket-here does not exist"
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AccessDeniedException", "permission denied for CreateModel"),
        ("AccessDenied", "permission denied for CreateModel"),
        ("ExpiredTokenException", "AWS rejected the credentials for CreateModel"),
        ("ThrottlingException", "CreateModel failed: ThrottlingException"),
    ],
)
def test_service_errors_are_explained_in_one_line(code: str, expected: str) -> None:
    # No local service can deny access: build botocore's real error from a real-shaped reply.
    error = ClientError(
        {
            "Error": {"Code": code, "Message": "User: arn:aws:iam::1:user/u is not authorized"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "CreateModel",
    )

    failure = explain(error)

    assert failure is not None
    assert failure.message.startswith(expected)
    assert "\n" not in failure.message
    assert failure.exit_code == EXIT_FAILURE


def test_a_long_service_message_is_shortened_between_words() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    error = ClientError({"Error": {"Code": "ValidationException", "Message": words}}, "CreateModel")

    failure = explain(error)

    assert failure is not None
    kept = failure.message.removeprefix("CreateModel failed: ValidationException: ")
    assert kept.endswith(" …")
    assert words.startswith(kept.removesuffix(" …") + " ")  # whole words, none cut in half


def test_a_bug_is_not_disguised() -> None:
    assert explain(KeyError("x")) is None


@pytest.mark.parametrize("command", ["models add", "models list", "deploy", "autoscale",
                                     "invoke", "teardown"])  # fmt: skip
def test_every_command_has_help_with_region_profile_and_endpoint_url(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command.split(), "--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert all(option in out for option in ("--region", "--profile", "--endpoint-url"))
    assert "AWS_ENDPOINT_URL" in out


@pytest.mark.parametrize(
    ("command", "promise"),
    [
        ("deploy", "removes what it created"),
        ("deploy", "not in ECR"),
        ("teardown", "mme:endpoint"),
        ("models add", "The bucket must exist"),
    ],
)
def test_help_describes_what_the_command_does_on_failure(
    command: str, promise: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command.split(), "--help"])

    assert promise in " ".join(capsys.readouterr().out.split())
