"""CreateModel (Mode=MultiModel), CreateEndpointConfig and CreateEndpoint, then wait.

Models and endpoint configs cannot be changed in SageMaker, so both are named after the
endpoint plus a hash of everything they hold: deploying the same settings again finds the
same names (nothing to do), and different settings get new ones that UpdateEndpoint can
switch to.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from mme.aws.errors import (
    AlreadyDeployedError,
    DeploymentFailedError,
    UsageError,
    WaitTimeoutError,
)
from mme.aws.model_store import S3Prefix
from mme.aws.session import Client

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
MAX_NAME_CHARS = 63
HASH_CHARS = 10
ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_ENV_ENTRIES = 100
MAX_ENV_CHARS = 1024
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/\S+$")
TAG_KEY = "mme:endpoint"
IN_SERVICE = "InService"
FAILED = "Failed"
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})

Report = Callable[[str], None]


@dataclass(frozen=True)
class DeploySpec:
    """Everything CreateModel and CreateEndpointConfig get for one multi-model endpoint."""

    endpoint_name: str
    image: str
    model_data_url: str
    role_arn: str
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int | None = None
    startup_timeout_s: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    model_cache: str | None = None  # "Enabled" / "Disabled"; None keeps SageMaker's default
    variant_name: str = "AllTraffic"

    def validate(self) -> None:
        """Raise UsageError for a value SageMaker would reject, before any call is made."""
        check_endpoint_name(self.endpoint_name)
        S3Prefix.parse(self.model_data_url)
        if not ROLE_ARN.match(self.role_arn):
            raise UsageError(
                f"--role {self.role_arn!r} is not an IAM role ARN "
                "(arn:aws:iam::123456789012:role/NAME)"
            )
        if self.instance_count < 1:
            raise UsageError("--instance-count must be at least 1")
        if self.volume_size_gb is not None and not 1 <= self.volume_size_gb <= 512:
            raise UsageError("--volume-size must be 1..512 GB")
        if self.startup_timeout_s is not None and not 60 <= self.startup_timeout_s <= 3600:
            raise UsageError("--startup-timeout must be 60..3600 seconds")
        if self.model_cache not in (None, "Enabled", "Disabled"):
            raise UsageError("--model-cache must be Enabled or Disabled")
        check_environment(self.environment)

    def resource_name(self) -> str:
        """The name of this spec's model and endpoint config: ``<endpoint>-<hash>``."""
        canonical = json.dumps(asdict(self), sort_keys=True, default=dict)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]
        return f"{name_base(self.endpoint_name)}-{digest}"


@dataclass(frozen=True)
class Deployment:
    """What deploy did: the endpoint, its status and the resources it runs on."""

    endpoint_name: str
    endpoint_arn: str
    status: str
    model_name: str
    config_name: str
    action: str  # "created", "updated" or "unchanged"


def check_endpoint_name(name: str) -> None:
    """Refuse an endpoint name that SageMaker would refuse."""
    if len(name) > MAX_NAME_CHARS or not NAME_PATTERN.match(name):
        raise UsageError(
            f"endpoint name {name!r} must be 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )


def name_base(endpoint_name: str) -> str:
    """The endpoint name cut so that ``<base>-<hash>`` fits SageMaker's 63 characters."""
    return endpoint_name[: MAX_NAME_CHARS - HASH_CHARS - 1].rstrip("-")


def owned_name(endpoint_name: str) -> re.Pattern[str]:
    """Matches the model and config names that deploy creates for ``endpoint_name``."""
    return re.compile(rf"^{re.escape(name_base(endpoint_name))}-[0-9a-f]{{{HASH_CHARS}}}$")


def parse_environment(pairs: list[str]) -> dict[str, str]:
    """Turn ``KEY=VALUE`` options into a dict; raises UsageError on a malformed one."""
    environment = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--env {pair!r} must be KEY=VALUE")
        environment[key] = value
    check_environment(environment)
    return environment


def check_environment(environment: Mapping[str, str]) -> None:
    """Refuse environments that CreateModel would refuse."""
    if len(environment) > MAX_ENV_ENTRIES:
        raise UsageError(f"at most {MAX_ENV_ENTRIES} environment variables are allowed")
    for key, value in environment.items():
        if not ENV_KEY.match(key) or len(key) > MAX_ENV_CHARS:
            raise UsageError(f"environment variable name {key!r} is not valid")
        if len(value) > MAX_ENV_CHARS:
            raise UsageError(f"the value of {key} is longer than {MAX_ENV_CHARS} characters")


def deploy(
    sagemaker: Client,
    spec: DeploySpec,
    update: bool = False,
    wait: bool = True,
    timeout_s: float = 3600,
    poll_s: float = 30,
    report: Report = print,
) -> Deployment:
    """Create (or, with ``update``, switch) the endpoint for ``spec``; see the module doc."""
    spec.validate()
    name = spec.resource_name()
    current = describe_endpoint(sagemaker, spec.endpoint_name)
    if current is not None:
        _check_redeploy(current, name, update)
        if current["EndpointConfigName"] == name:
            report(f"endpoint {spec.endpoint_name} already runs this configuration ({name})")
            final = _finish(sagemaker, spec.endpoint_name, wait, timeout_s, poll_s, report)
            return _result(final or current, name, "unchanged")
    _ensure_model(sagemaker, spec, name, report)
    _ensure_config(sagemaker, spec, name, report)
    if current is None:
        sagemaker.create_endpoint(
            EndpointName=spec.endpoint_name, EndpointConfigName=name, Tags=_tags(spec)
        )
        report(f"creating endpoint {spec.endpoint_name}")
        action = "created"
    else:
        # UpdateEndpoint swaps the config with no downtime; the old config stays until removed.
        sagemaker.update_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
        report(f"updating endpoint {spec.endpoint_name} to {name}")
        action = "updated"
    final = _finish(sagemaker, spec.endpoint_name, wait, timeout_s, poll_s, report)
    if current is not None and final is not None:
        _delete_replaced(sagemaker, spec.endpoint_name, current["EndpointConfigName"], report)
    return _result(final or describe_endpoint(sagemaker, spec.endpoint_name) or {}, name, action)


def _check_redeploy(current: Mapping[str, Any], name: str, update: bool) -> None:
    endpoint = current["EndpointName"]
    status = current["EndpointStatus"]
    if status == FAILED:
        raise DeploymentFailedError(
            f"endpoint {endpoint} exists and is Failed: {current.get('FailureReason', '?')}. "
            f"Remove it with `mme teardown {endpoint}`, then deploy again."
        )
    if current["EndpointConfigName"] != name and not update:
        raise AlreadyDeployedError(
            f"endpoint {endpoint} already exists with another configuration "
            f"({current['EndpointConfigName']}, status {status}). Pass --update to create "
            f"{name} and switch the endpoint to it with UpdateEndpoint (no downtime), or "
            f"`mme teardown {endpoint}` first."
        )


def _ensure_model(sagemaker: Client, spec: DeploySpec, name: str, report: Report) -> None:
    if _exists(partial(sagemaker.describe_model, ModelName=name)):
        report(f"model {name} exists")
        return
    container: dict[str, Any] = {
        "Image": spec.image,
        "Mode": "MultiModel",
        "ModelDataUrl": spec.model_data_url,
        "Environment": dict(spec.environment),
    }
    if spec.model_cache is not None:
        container["MultiModelConfig"] = {"ModelCacheSetting": spec.model_cache}
    sagemaker.create_model(
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn=spec.role_arn,
        Tags=_tags(spec),
    )
    report(f"created model {name} (MultiModel, {spec.model_data_url})")


def _ensure_config(sagemaker: Client, spec: DeploySpec, name: str, report: Report) -> None:
    if _exists(partial(sagemaker.describe_endpoint_config, EndpointConfigName=name)):
        report(f"endpoint config {name} exists")
        return
    variant: dict[str, Any] = {
        "VariantName": spec.variant_name,
        "ModelName": name,
        "InstanceType": spec.instance_type,
        "InitialInstanceCount": spec.instance_count,
        "InitialVariantWeight": 1.0,
    }
    if spec.volume_size_gb is not None:
        variant["VolumeSizeInGB"] = spec.volume_size_gb
    if spec.startup_timeout_s is not None:
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] = spec.startup_timeout_s
    sagemaker.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[variant], Tags=_tags(spec)
    )
    report(
        f"created endpoint config {name} "
        f"({spec.instance_count} x {spec.instance_type}, variant {spec.variant_name})"
    )


def _finish(
    sagemaker: Client, endpoint: str, wait: bool, timeout_s: float, poll_s: float, report: Report
) -> dict[str, Any] | None:
    if not wait:
        return None
    return wait_in_service(sagemaker, endpoint, timeout_s, poll_s, report)


def wait_in_service(
    sagemaker: Client, endpoint: str, timeout_s: float, poll_s: float, report: Report
) -> dict[str, Any]:
    """Poll until the endpoint is InService; raise with its FailureReason if it fails.

    Bounded by ``timeout_s``; each status is reported with the time waited so far.
    """
    start = time.monotonic()
    while True:
        description = describe_endpoint(sagemaker, endpoint)
        if description is None:
            raise DeploymentFailedError(f"endpoint {endpoint} disappeared while waiting for it")
        status = description["EndpointStatus"]
        waited = time.monotonic() - start
        report(f"endpoint {endpoint}: {status} ({waited:.0f}s)")
        if status == IN_SERVICE:
            return description
        if status not in BUSY:
            reason = description.get("FailureReason", "no reason given")
            raise DeploymentFailedError(
                f"endpoint {endpoint} is {status}: {reason}. Its logs are in CloudWatch "
                f"under /aws/sagemaker/Endpoints/{endpoint}."
            )
        if waited + poll_s > timeout_s:
            raise WaitTimeoutError(
                f"endpoint {endpoint} is still {status} after {waited:.0f}s (--wait-timeout "
                f"{timeout_s:.0f}); it goes on in the background: check it with "
                f"`aws sagemaker describe-endpoint --endpoint-name {endpoint}`"
            )
        time.sleep(poll_s)


def _delete_replaced(sagemaker: Client, endpoint: str, old_config: str, report: Report) -> None:
    """After an update, remove the config (and its models) that deploy made and that left."""
    if not owned_name(endpoint).match(old_config):
        return  # not ours: leave it to whoever made it
    description = _describe_config(sagemaker, old_config)
    sagemaker.delete_endpoint_config(EndpointConfigName=old_config)
    report(f"deleted the replaced endpoint config {old_config}")
    for variant in (description or {}).get("ProductionVariants", []):
        model = variant.get("ModelName", "")
        if owned_name(endpoint).match(model):
            sagemaker.delete_model(ModelName=model)
            report(f"deleted the replaced model {model}")


def _result(description: Mapping[str, Any], name: str, action: str) -> Deployment:
    return Deployment(
        endpoint_name=description.get("EndpointName", ""),
        endpoint_arn=description.get("EndpointArn", ""),
        status=description.get("EndpointStatus", "unknown"),
        model_name=name,
        config_name=description.get("EndpointConfigName", name),
        action=action,
    )


def _tags(spec: DeploySpec) -> list[dict[str, str]]:
    return [{"Key": TAG_KEY, "Value": spec.endpoint_name}]


def is_not_found(exc: ClientError) -> bool:
    """Whether a SageMaker error says the named resource does not exist."""
    error = exc.response.get("Error", {})
    # SageMaker reports a missing model, config or endpoint as a ValidationException.
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "Could not find" in str(error.get("Message", ""))
    )


def describe_endpoint(sagemaker: Client, endpoint: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when the endpoint does not exist."""
    try:
        return dict(sagemaker.describe_endpoint(EndpointName=endpoint))
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _describe_config(sagemaker: Client, config: str) -> dict[str, Any] | None:
    try:
        return dict(sagemaker.describe_endpoint_config(EndpointConfigName=config))
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _exists(describe: Callable[[], object]) -> bool:
    try:
        describe()
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True
