"""`mme deploy --update` end to end: UpdateEndpoint (served by `fake_aws`), then the clean-up.

Each test deploys a first configuration, then switches to a second one (another prefix) and
checks what exists afterwards: the endpoint's config, and the models and configs by name.
"""

from __future__ import annotations

from typing import Any

from mme.aws.session import Client
from tests.aws.aws_cli import deploy_args, resource_names, run_mme, text
from tests.aws.fake_aws import Faults

PING_FAILURE = (
    "The primary container for production variant AllTraffic did not pass the ping health "
    "check. Please check CloudWatch logs for this endpoint."
)


def _running(sagemaker: Client, endpoint: str) -> dict[str, Any]:
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    model = config["ProductionVariants"][0]["ModelName"]
    return {
        "status": described["EndpointStatus"],
        "config": config["EndpointConfigName"],
        "model": model,
        "prefix": sagemaker.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"],
    }


def _first_deploy(moto_url: str, sagemaker: Client, endpoint: str, bucket: str) -> dict[str, Any]:
    first = run_mme(*deploy_args(endpoint, moto_url, f"s3://{bucket}/"))
    assert first.returncode == 0, text(first.stderr)
    return _running(sagemaker, endpoint)


def test_update_switches_the_endpoint_and_deletes_the_replaced_pair(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    old = _first_deploy(moto_url, sagemaker, endpoint_name, bucket)

    updated = run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/v2/"), "--update")

    assert updated.returncode == 0, text(updated.stderr)
    new = _running(sagemaker, endpoint_name)
    assert new["prefix"] == f"s3://{bucket}/v2/" and new["status"] == "InService"
    assert resource_names(sagemaker, endpoint_name) == ([new["model"]], [new["config"]])
    assert f"endpoint {endpoint_name}: InService (updated)" in text(updated.stdout)
    err = text(updated.stderr)
    assert f"deleted the replaced endpoint config {old['config']}" in err
    assert f"deleted the replaced model {old['model']}" in err


def test_an_update_that_sagemaker_rolls_back_keeps_the_old_pair_and_removes_the_new(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str, moto_faults: Faults
) -> None:
    old = _first_deploy(moto_url, sagemaker, endpoint_name, bucket)
    moto_faults.rolled_back_updates[endpoint_name] = PING_FAILURE

    updated = run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/v2/"), "--update")

    err = text(updated.stderr).splitlines()
    assert updated.returncode == 1
    assert err[-1].startswith(f"mme deploy: error: endpoint {endpoint_name} rolled back")
    assert PING_FAILURE.rstrip(".") in err[-1] and old["config"] in err[-1]
    assert "removed" in err[-1] and "Traceback" not in text(updated.stderr)
    assert _running(sagemaker, endpoint_name) == old
    assert resource_names(sagemaker, endpoint_name) == ([old["model"]], [old["config"]])


def test_a_refused_update_removes_the_pair_it_created(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str, moto_faults: Faults
) -> None:
    old = _first_deploy(moto_url, sagemaker, endpoint_name, bucket)
    moto_faults.refused_updates[endpoint_name] = "Endpoint is being modified by another request."

    updated = run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/v2/"), "--update")

    err = text(updated.stderr)
    assert updated.returncode == 1
    assert "mme deploy: error: UpdateEndpoint failed: ValidationException" in err
    assert "; removed what this run had created: endpoint config" in err and "Traceback" not in err
    assert _running(sagemaker, endpoint_name) == old
    assert resource_names(sagemaker, endpoint_name) == ([old["model"]], [old["config"]])


def test_an_update_without_waiting_says_what_stays_and_the_next_run_removes_it(
    moto_url: str, sagemaker: Client, endpoint_name: str, bucket: str
) -> None:
    old = _first_deploy(moto_url, sagemaker, endpoint_name, bucket)
    args = deploy_args(endpoint_name, moto_url, f"s3://{bucket}/v2/")

    started = run_mme(*args, "--update", "--no-wait")
    left = resource_names(sagemaker, endpoint_name)
    again = run_mme(*args)

    assert started.returncode == 0, text(started.stderr)
    assert f"{old['config']} and model {old['model']} stay" in text(started.stderr)
    assert len(left[0]) == 2 and len(left[1]) == 2
    assert again.returncode == 0, text(again.stderr)
    assert "(unchanged)" in text(again.stdout)
    new = _running(sagemaker, endpoint_name)
    assert resource_names(sagemaker, endpoint_name) == ([new["model"]], [new["config"]])
