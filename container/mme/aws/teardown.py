"""Remove an endpoint and everything deploy and autoscale made for it; safe to repeat.

Order matters on AWS: the scaling policy and target go first (they point at the variant),
then the endpoint, then the configs and models it ran on. The S3 models stay: they are data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from botocore.exceptions import ClientError

from mme.aws.autoscaling import remove_autoscaling
from mme.aws.deployment import Report, describe_endpoint, is_not_found, name_base, owned_name
from mme.aws.errors import WaitTimeoutError
from mme.aws.session import Client


@dataclass
class TeardownResult:
    """What was deleted, by kind."""

    autoscaling: list[str] = field(default_factory=list)
    endpoint: str | None = None
    configs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    @property
    def nothing_found(self) -> bool:
        """True when there was nothing left to delete."""
        return not (self.autoscaling or self.endpoint or self.configs or self.models)


def teardown(
    sagemaker: Client,
    autoscaling: Client,
    endpoint: str,
    timeout_s: float = 1800,
    poll_s: float = 15,
    report: Report = print,
) -> TeardownResult:
    """Delete the endpoint's scaling, the endpoint, its configs and models."""
    result = TeardownResult()
    result.autoscaling = remove_autoscaling(autoscaling, endpoint)
    for line in result.autoscaling:
        report(f"deleted {line}")
    configs: set[str] = set()
    description = describe_endpoint(sagemaker, endpoint)
    if description is not None:
        configs.add(description["EndpointConfigName"])
        if _deleted(partial(sagemaker.delete_endpoint, EndpointName=endpoint)):
            result.endpoint = endpoint
            report(f"deleting endpoint {endpoint}")
            _wait_deleted(sagemaker, endpoint, timeout_s, poll_s)
            report(f"deleted endpoint {endpoint}")
    # Configs and models that deploy named for this endpoint may outlive it (an update that
    # failed half-way, an endpoint deleted by hand): find them by name too.
    configs.update(_owned(sagemaker, "list_endpoint_configs", "EndpointConfigs", endpoint))
    models = set(_owned(sagemaker, "list_models", "Models", endpoint))
    for config in sorted(configs):
        models.update(_config_models(sagemaker, config))
        if _deleted(partial(sagemaker.delete_endpoint_config, EndpointConfigName=config)):
            result.configs.append(config)
            report(f"deleted endpoint config {config}")
    for model in sorted(models):
        if _deleted(partial(sagemaker.delete_model, ModelName=model)):
            result.models.append(model)
            report(f"deleted model {model}")
    return result


def _owned(sagemaker: Client, operation: str, key: str, endpoint: str) -> list[str]:
    pattern = owned_name(endpoint)
    name_key = "EndpointConfigName" if key == "EndpointConfigs" else "ModelName"
    names: list[str] = []
    paginator = sagemaker.get_paginator(operation)
    for page in paginator.paginate(NameContains=name_base(endpoint)):
        names.extend(item[name_key] for item in page.get(key, []) if pattern.match(item[name_key]))
    return names


def _config_models(sagemaker: Client, config: str) -> list[str]:
    try:
        description = sagemaker.describe_endpoint_config(EndpointConfigName=config)
    except ClientError as exc:
        if is_not_found(exc):
            return []
        raise
    return [v["ModelName"] for v in description.get("ProductionVariants", []) if "ModelName" in v]


def _deleted(delete: Callable[[], object]) -> bool:
    """Run ``delete``; False when the resource was already gone."""
    try:
        delete()
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def _wait_deleted(sagemaker: Client, endpoint: str, timeout_s: float, poll_s: float) -> None:
    # Deleting an endpoint takes minutes on AWS; wait (bounded) so that a deploy that follows
    # does not find it still Deleting.
    deadline = time.monotonic() + timeout_s
    while describe_endpoint(sagemaker, endpoint) is not None:
        if time.monotonic() + poll_s > deadline:
            raise WaitTimeoutError(
                f"endpoint {endpoint} is still being deleted after {timeout_s:.0f}s; "
                "run teardown again later to finish"
            )
        time.sleep(poll_s)
