"""Application Auto Scaling for an endpoint variant: target tracking on invocations.

AWS recommends SageMakerVariantInvocationsPerInstance for multi-model endpoints: it counts
the invocations of all models together, per instance and minute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from mme.aws.errors import EndpointNotFoundError, UsageError
from mme.aws.resources import describe_endpoint
from mme.aws.session import Client

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
DEFAULT_POLICY_NAME = "mme-invocations-per-instance"
MAX_INSTANCES = 1000  # a sanity bound; the real limit is the account's instance quota


@dataclass(frozen=True)
class ScalingSpec:
    """The variant to scale, its bounds and the target-tracking settings."""

    endpoint_name: str
    variant_name: str = "AllTraffic"
    min_capacity: int = 1
    max_capacity: int = 2
    target_invocations: float = 70.0  # per instance and minute
    scale_in_cooldown_s: int = 600
    scale_out_cooldown_s: int = 300
    policy_name: str = DEFAULT_POLICY_NAME

    def validate(self) -> None:
        """Raise UsageError for bounds or settings that cannot work."""
        if not 1 <= self.min_capacity <= self.max_capacity <= MAX_INSTANCES:
            raise UsageError("need 1 <= --min-instances <= --max-instances")
        if self.target_invocations <= 0:
            raise UsageError("--target-invocations must be positive")
        if self.scale_in_cooldown_s < 0 or self.scale_out_cooldown_s < 0:
            raise UsageError("cool-downs cannot be negative")

    @property
    def resource_id(self) -> str:
        """Application Auto Scaling's name for the variant."""
        return resource_id(self.endpoint_name, self.variant_name)


def resource_id(endpoint_name: str, variant_name: str) -> str:
    """``endpoint/<endpoint>/variant/<variant>``."""
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def enable_autoscaling(autoscaling: Client, sagemaker: Client, spec: ScalingSpec) -> str:
    """Register the variant as a scalable target and put the policy; returns the policy ARN.

    Both calls replace what is there, so running this again just applies the new settings.
    """
    spec.validate()
    _check_variant(sagemaker, spec.endpoint_name, spec.variant_name)
    autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=spec.resource_id,
        ScalableDimension=DIMENSION,
        MinCapacity=spec.min_capacity,
        MaxCapacity=spec.max_capacity,
    )
    response = autoscaling.put_scaling_policy(
        PolicyName=spec.policy_name,
        ServiceNamespace=NAMESPACE,
        ResourceId=spec.resource_id,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": spec.target_invocations,
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": spec.scale_in_cooldown_s,
            "ScaleOutCooldown": spec.scale_out_cooldown_s,
        },
    )
    return str(response["PolicyARN"])


def _check_variant(sagemaker: Client, endpoint_name: str, variant_name: str) -> None:
    description = describe_endpoint(sagemaker, endpoint_name)
    if description is None:
        raise EndpointNotFoundError(
            f"endpoint {endpoint_name} does not exist: deploy it first (`mme deploy`)"
        )
    variants = [v["VariantName"] for v in description.get("ProductionVariants", [])]
    if variant_name not in variants:
        raise UsageError(
            f"endpoint {endpoint_name} has no variant {variant_name} (it has: "
            f"{', '.join(variants) or 'none'}); choose one with --variant-name"
        )


def remove_autoscaling(autoscaling: Client, endpoint_name: str) -> list[str]:
    """Delete every scaling policy and scalable target of the endpoint's variants.

    Returns what was removed; nothing to remove is not an error.
    """
    removed = []
    owned = f"endpoint/{endpoint_name}/variant/"
    for policy in _all(autoscaling, "describe_scaling_policies", "ScalingPolicies"):
        if policy["ResourceId"].startswith(owned) and _ignore_missing(
            partial(
                autoscaling.delete_scaling_policy,
                PolicyName=policy["PolicyName"],
                ServiceNamespace=NAMESPACE,
                ResourceId=policy["ResourceId"],
                ScalableDimension=policy["ScalableDimension"],
            )
        ):
            removed.append(f"scaling policy {policy['PolicyName']} on {policy['ResourceId']}")
    for target in _all(autoscaling, "describe_scalable_targets", "ScalableTargets"):
        if target["ResourceId"].startswith(owned) and _ignore_missing(
            partial(
                autoscaling.deregister_scalable_target,
                ServiceNamespace=NAMESPACE,
                ResourceId=target["ResourceId"],
                ScalableDimension=target["ScalableDimension"],
            )
        ):
            removed.append(f"scalable target {target['ResourceId']}")
    return removed


def _all(autoscaling: Client, operation: str, key: str) -> list[Mapping[str, Any]]:
    # ResourceIds cannot filter by an endpoint's variants without knowing them (the endpoint
    # may be gone already), so read the namespace's list and pick the endpoint's entries.
    items: list[Mapping[str, Any]] = []
    for page in autoscaling.get_paginator(operation).paginate(ServiceNamespace=NAMESPACE):
        items.extend(page.get(key, []))
    return items


def _ignore_missing(call: Callable[[], object]) -> bool:
    """Run ``call``; False if the thing was already gone (a concurrent teardown)."""
    try:
        call()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = str(error.get("Message", ""))
        # AWS says ObjectNotFoundException; some compatible services say ValidationException.
        if error.get("Code") == "ObjectNotFoundException" or message.startswith("No scal"):
            return False
        raise
    return True
