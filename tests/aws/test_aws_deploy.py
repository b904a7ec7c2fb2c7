"""`mme deploy` against the moto SageMaker control plane over HTTP."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.stub import Stubber

from mme.aws.deployment import DeploySpec, deploy, wait_in_service
from mme.aws.errors import DeploymentFailedError, UsageError, WaitTimeoutError
from mme.aws.ownership import owned_name
from mme.aws.resources import describe_endpoint
from mme.aws.session import Client
from tests.aws.aws_cli import IMAGE, ROLE, deploy_args, resource_names, run_mme, text

BOGUS = "ml.m5.bogus"  # shaped like an instance type; SageMaker has none of that name


def test_deploy_round_trips_multi_model_mode_prefix_and_environment(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    prefix = f"s3://{bucket}/mme/"

    deployed = run_mme(
        *deploy_args(endpoint_name, moto_url, prefix),
        "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=2",
        "--env", "MME_NUM_THREADS=1",
        "--model-cache", "Disabled",
        "--instance-type", "ml.c5.2xlarge",
        "--instance-count", "2",
        "--volume-size", "40",
        "--startup-timeout", "900",
    )  # fmt: skip

    assert deployed.returncode == 0, text(deployed.stderr)
    assert f"endpoint {endpoint_name}: InService (created)" in text(deployed.stdout)
    assert f"endpoint {endpoint_name}: InService" in text(deployed.stderr)  # wait progress
    endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    container = model["PrimaryContainer"]
    assert endpoint["EndpointStatus"] == "InService"
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == prefix
    assert container["Image"] == IMAGE
    assert container["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "MME_NUM_THREADS": "1",
    }
    assert container["MultiModelConfig"] == {"ModelCacheSetting": "Disabled"}
    assert model["ExecutionRoleArn"] == ROLE
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InstanceType"] == "ml.c5.2xlarge"
    assert variant["InitialInstanceCount"] == 2
    assert variant["VolumeSizeInGB"] == 40
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900


def test_deploying_the_same_settings_again_changes_nothing(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    args = deploy_args(endpoint_name, moto_url, f"s3://{bucket}/")
    first = run_mme(*args)
    before = resource_names(sagemaker, endpoint_name)

    again = run_mme(*args)

    assert first.returncode == 0, text(first.stderr)
    assert again.returncode == 0, text(again.stderr)
    assert "already runs this configuration" in text(again.stderr)
    assert "(unchanged)" in text(again.stdout)
    assert resource_names(sagemaker, endpoint_name) == before
    assert len(before[0]) == 1 and len(before[1]) == 1


def test_deploying_other_settings_needs_update_and_creates_nothing_without_it(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    assert run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/")).returncode == 0
    before = resource_names(sagemaker, endpoint_name)

    changed = run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/v2/"))

    assert changed.returncode == 1
    assert "already exists with another configuration" in text(changed.stderr)
    assert "--update" in text(changed.stderr)
    assert "Traceback" not in text(changed.stderr)
    assert resource_names(sagemaker, endpoint_name) == before


def test_a_deploy_that_fails_half_way_removes_what_it_created(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    # SageMaker refuses the instance type at CreateEndpointConfig, after CreateModel.
    args = [*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/"), "--instance-type", BOGUS]

    first = run_mme(*args)
    second = run_mme(*args)

    for failed in (first, second):
        err = text(failed.stderr)
        assert failed.returncode == 1, err
        assert "Traceback" not in err and "model exists" not in err
        assert resource_names(sagemaker, endpoint_name) == ([], [])
    line = text(first.stderr).splitlines()[-1]
    assert line.startswith(f"mme deploy: error: --instance-type {BOGUS}: SageMaker refused it")
    assert re.search(r"; removed what this run had created: model \S+-[0-9a-f]{10}$", line), line
    assert f"Value '{BOGUS}' at 'instanceType'" in line
    assert "…" in line and len(line) < 400  # the list of valid types is shortened, not cut


def test_deploy_refuses_an_instance_type_that_is_no_instance_type(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    refused = run_mme(
        *deploy_args(endpoint_name, moto_url, f"s3://{bucket}/"), "--instance-type", "m5.xlarge"
    )

    assert refused.returncode == 2
    assert "--instance-type 'm5.xlarge'" in text(refused.stderr)
    assert "ml.m5.xlarge" in text(refused.stderr)
    assert resource_names(sagemaker, endpoint_name) == ([], [])


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("", "--image is empty"),
        ("pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", "not in Amazon ECR"),
        ("public.ecr.aws/acme/mme-pytorch:1.0", "not in Amazon ECR"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/mme-pytorch", "names no tag"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/mme-pytorch:1.0",
         "is in eu-west-1, the endpoint in us-east-1"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/mme pytorch:1.0", "spaces"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/MME:1.0", "not an ECR repository name"),
    ],
)  # fmt: skip
def test_deploy_refuses_an_image_that_sagemaker_would_refuse(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str, image: str, reason: str
) -> None:
    args = deploy_args(endpoint_name, moto_url, f"s3://{bucket}/")
    args[args.index(IMAGE)] = image

    refused = run_mme(*args)

    err = text(refused.stderr)
    assert refused.returncode == 2, err
    assert err.startswith("mme deploy: error: --image") and reason in err, err
    assert err.count("\n") == 1
    assert resource_names(sagemaker, endpoint_name) == ([], [])
    assert describe_endpoint(sagemaker, endpoint_name) is None


def test_deploy_takes_an_image_by_digest(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    image = IMAGE.rsplit(":", 1)[0] + "@sha256:" + "ab" * 32
    args = deploy_args(endpoint_name, moto_url, f"s3://{bucket}/")
    args[args.index(IMAGE)] = image

    deployed = run_mme(*args)

    assert deployed.returncode == 0, text(deployed.stderr)
    model = resource_names(sagemaker, endpoint_name)[0][0]
    assert sagemaker.describe_model(ModelName=model)["PrimaryContainer"]["Image"] == image


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("s3://bucket/models", "must end with '/'"),
        ("/local/models/", "must be an s3:// URL"),
    ],
)
def test_deploy_refuses_a_bad_prefix(
    moto_url: str, sagemaker: Client, endpoint_name: str, prefix: str, reason: str
) -> None:
    refused = run_mme(*deploy_args(endpoint_name, moto_url, prefix))

    assert refused.returncode == 2
    assert reason in text(refused.stderr)
    assert text(refused.stderr).startswith("mme deploy: error: model data URL")
    assert resource_names(sagemaker, endpoint_name) == ([], [])


def test_deploy_refuses_bad_settings_before_calling_aws(moto_url: str, endpoint_name: str) -> None:
    bad_env = run_mme(*deploy_args(endpoint_name, moto_url, "s3://bucket/m/"), "--env", "1X=2")
    bad_role = run_mme(
        *deploy_args(endpoint_name, moto_url, "s3://bucket/m/")[:-4], "--role", "admin"
    )

    assert bad_env.returncode == 2
    assert "environment variable name '1X'" in text(bad_env.stderr)
    assert bad_role.returncode == 2
    assert "not an IAM role ARN" in text(bad_role.stderr)


def test_resource_names_follow_the_settings_and_fit_sagemaker() -> None:
    spec = DeploySpec("a" * 63, IMAGE, "s3://bucket/m/", ROLE)
    other = DeploySpec("a" * 63, IMAGE, "s3://bucket/m/", ROLE, instance_count=2)

    assert (
        spec.resource_name() == DeploySpec("a" * 63, IMAGE, "s3://bucket/m/", ROLE).resource_name()
    )
    assert spec.resource_name() != other.resource_name()
    assert len(spec.resource_name()) <= 63
    assert owned_name("a" * 63).match(spec.resource_name())
    assert not owned_name("a" * 63).match("a" * 52 + "-model")


def _describe(status: str, reason: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "EndpointName": "ep",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
        "EndpointConfigName": "ep-0123456789",
        "EndpointStatus": status,
        "CreationTime": "2026-01-01T00:00:00Z",
        "LastModifiedTime": "2026-01-01T00:00:00Z",
    }
    if reason is not None:
        response["FailureReason"] = reason
    return response


def test_waiting_fails_with_the_endpoint_failure_reason(target: Any) -> None:
    # moto makes endpoints InService at once; botocore's Stubber plays the Failed endpoint
    # on a real client (it checks the responses against the service model).
    sagemaker = target.client("sagemaker")
    reason = "The primary container for production variant AllTraffic did not pass the ping"
    lines: list[str] = []
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_endpoint", _describe("Creating"), {"EndpointName": "ep"})
        stub.add_response("describe_endpoint", _describe("Failed", reason), {"EndpointName": "ep"})
        with pytest.raises(DeploymentFailedError, match="ep is Failed: The primary container"):
            wait_in_service(sagemaker, "ep", timeout_s=60, poll_s=0, report=lines.append)

    assert lines == ["endpoint ep: Creating (0s)", "endpoint ep: Failed (0s)"]


def test_waiting_is_bounded(target: Any) -> None:
    sagemaker = target.client("sagemaker")
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_endpoint", _describe("Creating"), {"EndpointName": "ep"})
        with pytest.raises(WaitTimeoutError, match="still Creating"):
            wait_in_service(sagemaker, "ep", timeout_s=0, poll_s=30, report=lambda _: None)


def test_redeploying_over_a_failed_endpoint_says_to_tear_it_down(target: Any) -> None:
    sagemaker = target.client("sagemaker")
    spec = DeploySpec("ep", IMAGE, "s3://bucket/m/", ROLE)
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_endpoint", _describe("Failed", "bad image"))
        with pytest.raises(DeploymentFailedError, match="mme teardown ep"):
            deploy(sagemaker, spec, report=lambda _: None)


def test_spec_validation_names_the_option() -> None:
    with pytest.raises(UsageError, match="--startup-timeout"):
        DeploySpec("ep", IMAGE, "s3://bucket/m/", ROLE, startup_timeout_s=30).validate()
    with pytest.raises(UsageError, match="endpoint name"):
        DeploySpec("bad_name", IMAGE, "s3://bucket/m/", ROLE).validate()
