"""SageMaker's describe and delete calls, where "it does not exist" is an answer, not an error.

Deploy, teardown and autoscale all ask whether a model, config or endpoint is there, and
delete things that a concurrent run may have deleted first; these helpers say so in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from mme.aws.session import Client


def is_not_found(exc: ClientError) -> bool:
    """Whether a SageMaker error says the named resource does not exist."""
    error = exc.response.get("Error", {})
    # SageMaker reports a missing model, config or endpoint as a ValidationException.
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "Could not find" in str(error.get("Message", ""))
    )


def describe_endpoint(sagemaker: Client, endpoint: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when the endpoint does not exist."""
    return _described(lambda: sagemaker.describe_endpoint(EndpointName=endpoint))


def describe_endpoint_config(sagemaker: Client, config: str) -> dict[str, Any] | None:
    """DescribeEndpointConfig, or None when the config does not exist."""
    return _described(lambda: sagemaker.describe_endpoint_config(EndpointConfigName=config))


def config_models(description: dict[str, Any] | None) -> list[str]:
    """The model names of an endpoint config's variants (none for a missing config)."""
    variants = (description or {}).get("ProductionVariants", [])
    return [variant["ModelName"] for variant in variants if "ModelName" in variant]


def exists(describe: Callable[[], Any]) -> bool:
    """Run a describe call; False when the resource does not exist."""
    return _described(describe) is not None


def deleted(delete: Callable[[], object]) -> bool:
    """Run a delete call; False when the resource was already gone."""
    try:
        delete()
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def _described(describe: Callable[[], Any]) -> dict[str, Any] | None:
    try:
        return dict(describe())
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
