"""SageMaker's rules, and that the local endpoint and the deploy tools apply the same ones."""

from __future__ import annotations

import pytest

from mme.aws.deployment import check_endpoint_name
from mme.aws.errors import UsageError
from mme.aws.model_store import S3Prefix, check_target_model
from mme.endpoint import wire
from mme.endpoint.errors import ValidationError
from mme.sagemaker_contract import (
    MAX_NAME_CHARS,
    MAX_TARGET_MODEL_CHARS,
    is_valid_name,
    s3_error_code,
    split_s3_url,
    target_model_key_problem,
    target_model_problem,
)

# Names InvokeEndpoint refuses as a TargetModel, whoever sends them.
BAD_TARGET_MODELS = [
    "",
    " a.tar.gz",
    "\ta.tar.gz",
    "a\n.tar.gz",
    "a\x00.tar.gz",
    "x" * (MAX_TARGET_MODEL_CHARS + 1),
]
# Names that read as another path than the key S3 would look up.
NOT_PLAIN_KEYS = {
    "/a.tar.gz": "starts with '/'",
    "./a.tar.gz": "'.' or '..' part",
    "sub/../a.tar.gz": "'.' or '..' part",
    "sub//a.tar.gz": "an empty",
    "../a.tar.gz": "'.' or '..' part",
}
GOOD_NAMES = ["a", "ep-1", "a--b", "A9", "x" * MAX_NAME_CHARS]
BAD_NAMES = [
    "",
    "-a",
    "a-",
    "a_b",
    "a.b",
    "x" * (MAX_NAME_CHARS + 1),
    "a" + "-" * MAX_NAME_CHARS + "b",
]


@pytest.mark.parametrize(
    "target", ["a.tar.gz", "sub/dir/ü.tar.gz", "a b.tar.gz", "x" * MAX_TARGET_MODEL_CHARS]
)
def test_target_models_invoke_endpoint_takes(target: str) -> None:
    assert target_model_problem(target) is None


@pytest.mark.parametrize("target", BAD_TARGET_MODELS)
def test_target_models_invoke_endpoint_refuses(target: str) -> None:
    assert "1 to 1024 printable characters" in str(target_model_problem(target))


@pytest.mark.parametrize(("target", "words"), NOT_PLAIN_KEYS.items())
def test_target_models_that_a_folder_would_resolve_are_not_plain_keys(
    target: str, words: str
) -> None:
    assert words in str(target_model_key_problem(target))


def test_a_relative_key_is_plain() -> None:
    assert target_model_key_problem("team-a/sub/m.tar.gz") is None


@pytest.mark.parametrize("target", [t for t in BAD_TARGET_MODELS if t])
def test_endpoint_and_cli_refuse_the_same_target_models(target: str) -> None:
    with pytest.raises(ValidationError, match="TargetModel must be 1 to 1024"):
        wire.check_target_model(target, "request-1", "ep")
    with pytest.raises(UsageError, match="1 to 1024"):
        check_target_model(target)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_sagemaker_takes(name: str) -> None:
    assert is_valid_name(name)
    check_endpoint_name(name)
    assert wire.check_endpoint(name, name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_sagemaker_refuses_are_refused_by_endpoint_and_cli(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(UsageError, match="endpoint name"):
        check_endpoint_name(name)
    with pytest.raises(ValidationError, match="not found"):
        wire.check_endpoint(name, name)


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("s3://bucket/mme/", ("bucket", "mme/")),
        ("s3://bucket/mme", ("bucket", "mme")),  # the prefix is joined as is
        ("s3://bucket", ("bucket", "")),
        ("s3:///mme/", ("", "mme/")),
        ("s3://bucket/a//b/", ("bucket", "a//b/")),
    ],
)
def test_s3_urls_split_as_plain_strings(url: str, parts: tuple[str, str]) -> None:
    assert split_s3_url(url) == parts


@pytest.mark.parametrize("url", ["https://bucket/mme/", "/local/models/", "S3://bucket/"])
def test_only_s3_urls_split(url: str) -> None:
    with pytest.raises(ValueError, match="not an s3://bucket/prefix URL"):
        split_s3_url(url)


def test_the_cli_prefix_is_the_split_url_with_its_own_rules() -> None:
    prefix = S3Prefix.parse("s3://bucket/mme/")
    assert (prefix.bucket, prefix.key_prefix) == split_s3_url(prefix.url)
    with pytest.raises(UsageError, match="valid S3 bucket"):
        S3Prefix.parse("s3:///mme/")


class _ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": "..."}}


def test_s3_error_codes() -> None:
    assert s3_error_code(_ClientError("NoSuchKey")) == "NoSuchKey"
    assert s3_error_code(ValueError("no response")) == ""
