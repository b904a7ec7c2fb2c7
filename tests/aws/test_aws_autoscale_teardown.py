"""`mme autoscale` and `mme teardown` against moto over HTTP."""

from __future__ import annotations

from mme.aws.autoscaling import (
    DIMENSION,
    ScalingSpec,
    enable_autoscaling,
    remove_autoscaling,
)
from mme.aws.deployment import DeploySpec, deploy
from mme.aws.resources import describe_endpoint
from mme.aws.session import Client
from mme.aws.teardown import teardown
from tests.aws.aws_cli import IMAGE, ROLE, deploy_args, resource_names, run_mme, text


def _scaling(autoscaling: Client, endpoint: str) -> tuple[list[dict], list[dict]]:
    resource = f"endpoint/{endpoint}/variant/AllTraffic"
    targets = autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource]
    )["ScalableTargets"]
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource
    )["ScalingPolicies"]
    return targets, policies


def test_autoscale_registers_the_variant_and_a_target_tracking_policy(
    moto_url: str, autoscaling: Client, endpoint_name: str, bucket: str
) -> None:
    assert run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/")).returncode == 0

    scaled = run_mme(
        "autoscale", endpoint_name, "--endpoint-url", moto_url,
        "--min-instances", "2", "--max-instances", "6", "--target-invocations", "120",
        "--scale-in-cooldown", "900", "--scale-out-cooldown", "60",
    )  # fmt: skip

    assert scaled.returncode == 0, text(scaled.stderr)
    targets, policies = _scaling(autoscaling, endpoint_name)
    assert [
        (t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"])
        for t in targets
    ] == [(f"endpoint/{endpoint_name}/variant/AllTraffic", DIMENSION, 2, 6)]
    assert DIMENSION == "sagemaker:variant:DesiredInstanceCount"
    [policy] = policies
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalableDimension"] == DIMENSION
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    assert (tracking["TargetValue"], tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (
        120.0,
        900,
        60,
    )
    assert policy["PolicyARN"] in text(scaled.stdout)


def test_autoscale_again_replaces_the_settings_and_remove_is_idempotent(
    sagemaker: Client, autoscaling: Client, endpoint_name: str, bucket: str
) -> None:
    spec = DeploySpec(endpoint_name, IMAGE, f"s3://{bucket}/", ROLE)
    deploy(sagemaker, spec, poll_s=0, report=lambda _: None)
    enable_autoscaling(autoscaling, sagemaker, ScalingSpec(endpoint_name, max_capacity=3))
    enable_autoscaling(autoscaling, sagemaker, ScalingSpec(endpoint_name, max_capacity=5))
    targets, policies = _scaling(autoscaling, endpoint_name)
    assert [t["MaxCapacity"] for t in targets] == [5]
    assert len(policies) == 1

    removed = remove_autoscaling(autoscaling, endpoint_name)
    again = remove_autoscaling(autoscaling, endpoint_name)

    assert len(removed) == 2
    assert again == []
    assert _scaling(autoscaling, endpoint_name) == ([], [])


def test_autoscale_refuses_a_missing_endpoint_and_bad_bounds(moto_url: str) -> None:
    missing = run_mme("autoscale", "no-such-endpoint", "--endpoint-url", moto_url)
    bounds = run_mme(
        "autoscale", "no-such-endpoint", "--endpoint-url", moto_url,
        "--min-instances", "3", "--max-instances", "2",
    )  # fmt: skip

    assert missing.returncode == 1
    assert "endpoint no-such-endpoint does not exist" in text(missing.stderr)
    assert bounds.returncode == 2
    assert "--min-instances <= --max-instances" in text(bounds.stderr)


def test_teardown_leaves_nothing_and_can_run_again(
    moto_url: str, sagemaker: Client, autoscaling: Client, endpoint_name: str, bucket: str
) -> None:
    prefix = f"s3://{bucket}/"
    assert run_mme(*deploy_args(endpoint_name, moto_url, prefix)).returncode == 0
    # An --update that is not waited for leaves the replaced model and config behind.
    updated = run_mme(
        *deploy_args(endpoint_name, moto_url, f"{prefix}v2/"), "--update", "--no-wait"
    )
    assert updated.returncode == 0, text(updated.stderr)
    assert run_mme("autoscale", endpoint_name, "--endpoint-url", moto_url).returncode == 0
    assert resource_names(sagemaker, endpoint_name) != ([], [])

    down = run_mme("teardown", endpoint_name, "--endpoint-url", moto_url, "--poll-interval", "1")
    again = run_mme("teardown", endpoint_name, "--endpoint-url", moto_url)

    assert down.returncode == 0, text(down.stderr)
    out = text(down.stdout)
    assert "deleted scaling policy" in out and "deleted scalable target" in out
    assert f"deleted endpoint {endpoint_name}" in out
    assert out.count("deleted endpoint config") == 2 and out.count("deleted model") == 2
    assert describe_endpoint(sagemaker, endpoint_name) is None
    assert resource_names(sagemaker, endpoint_name) == ([], [])
    assert _scaling(autoscaling, endpoint_name) == ([], [])
    assert again.returncode == 0, text(again.stderr)
    assert f"nothing to delete for endpoint {endpoint_name}" in text(again.stdout)


def test_teardown_keeps_other_endpoints(
    sagemaker: Client, autoscaling: Client, endpoint_name: str, bucket: str
) -> None:

    # "<name>-2" shares the name's start: only exact `<name>-<hash>` resources are ours.
    neighbour = f"{endpoint_name}-2"
    for name in (endpoint_name, neighbour):
        deploy(sagemaker, DeploySpec(name, IMAGE, f"s3://{bucket}/", ROLE), report=lambda _: None)
    enable_autoscaling(autoscaling, sagemaker, ScalingSpec(neighbour))

    result = teardown(sagemaker, autoscaling, endpoint_name, poll_s=0, report=lambda _: None)

    assert result.endpoint == endpoint_name
    assert describe_endpoint(sagemaker, neighbour) is not None
    assert len(resource_names(sagemaker, neighbour)[0]) == 1
    assert len(_scaling(autoscaling, neighbour)[1]) == 1
    teardown(sagemaker, autoscaling, neighbour, poll_s=0, report=lambda _: None)
