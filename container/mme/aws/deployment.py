"""CreateModel (Mode=MultiModel), CreateEndpointConfig, CreateEndpoint or UpdateEndpoint, wait.

Models and endpoint configs cannot be changed in SageMaker, so both are named after the
endpoint plus a hash of everything they hold: deploying the same settings again finds the
same names (nothing to do), and different settings get new ones that UpdateEndpoint can
switch to. A run that fails before SageMaker takes the endpoint call deletes what it
created; one that fails later says what is left and how to remove it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from mme.aws.errors import (
    AlreadyDeployedError,
    DeploymentFailedError,
    UsageError,
    WaitTimeoutError,
    explain,
    raise_in_context,
)
from mme.aws.image import check_image
from mme.aws.model_store import S3Prefix
from mme.aws.ownership import (
    CONFIGS,
    HASH_CHARS,
    MODELS,
    Kind,
    Report,
    delete,
    name_base,
    remove_owned,
    tags,
)
from mme.aws.resources import config_models, describe_endpoint, describe_endpoint_config, exists
from mme.aws.session import Client
from mme.sagemaker_contract import (
    ENV_NAME,
    INSTANCE_TYPE,
    MAX_ENV_CHARS,
    MAX_ENV_ENTRIES,
    METRICS_FREQUENCIES_S,
    METRICS_PATH,
    MODEL_CACHE_SETTINGS,
    ROLE_ARN,
    STARTUP_HEALTH_CHECK_S,
    VOLUME_SIZE_GB,
    is_valid_name,
)
from mme.settings import Settings, SettingsError

METRICS_PATH_VAR = "MME_METRICS_PATH"
IN_SERVICE = "InService"
FAILED = "Failed"
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
# A ValidationException that names one of these fields is about the option (and spec field).
OPTION_FIELDS = {
    "instanceType": ("--instance-type", "instance_type"),
    "initialInstanceCount": ("--instance-count", "instance_count"),
    "volumeSizeInGB": ("--volume-size", "volume_size_gb"),
}


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
    metrics_path: str | None = "/metrics"  # None: SageMaker scrapes nothing (--no-metrics)
    metrics_frequency_s: int = 60

    def validate(self, region: str | None = None) -> None:
        """Raise UsageError for a value SageMaker would reject, before any call is made.

        ``region`` is the endpoint's: the image must come from ECR there.
        """
        check_endpoint_name(self.endpoint_name)
        check_image(self.image, region)
        S3Prefix.parse(self.model_data_url)
        if not ROLE_ARN.match(self.role_arn):
            raise UsageError(
                f"--role {self.role_arn!r} is not an IAM role ARN "
                "(arn:aws:iam::123456789012:role/NAME)"
            )
        if not INSTANCE_TYPE.match(self.instance_type):
            raise UsageError(
                f"--instance-type {self.instance_type!r} is not a SageMaker instance type "
                "(they look like ml.m5.xlarge or ml.g5.2xlarge)"
            )
        if self.instance_count < 1:
            raise UsageError("--instance-count must be at least 1")
        _check_range("--volume-size", self.volume_size_gb, VOLUME_SIZE_GB, "GB")
        _check_range("--startup-timeout", self.startup_timeout_s, STARTUP_HEALTH_CHECK_S, "seconds")
        if self.model_cache not in (None, *MODEL_CACHE_SETTINGS):
            raise UsageError(f"--model-cache must be {' or '.join(MODEL_CACHE_SETTINGS)}")
        check_environment(self.environment)
        self._check_metrics()

    def _check_metrics(self) -> None:
        if self.metrics_path is None:
            return
        if not METRICS_PATH.match(self.metrics_path):
            raise UsageError(
                f"--metrics-path {self.metrics_path!r} must be a path of letters, "
                "digits and / _ . - (SageMaker's rule), such as /metrics"
            )
        try:
            Settings.from_env({METRICS_PATH_VAR: self.metrics_path})
        except SettingsError as exc:
            raise UsageError(f"--metrics-path: {exc}") from None
        chosen = self.environment.get(METRICS_PATH_VAR)
        if chosen is not None and chosen != self.metrics_path:
            raise UsageError(
                f"--env {METRICS_PATH_VAR}={chosen} differs from --metrics-path "
                f"{self.metrics_path}: give the path with --metrics-path only"
            )
        if self.metrics_frequency_s not in METRICS_FREQUENCIES_S:
            raise UsageError(
                "--metrics-frequency must be one of "
                f"{', '.join(map(str, METRICS_FREQUENCIES_S))} seconds"
            )

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


def _check_range(option: str, value: int | None, bounds: tuple[int, int], unit: str) -> None:
    low, high = bounds
    if value is not None and not low <= value <= high:
        raise UsageError(f"{option} must be {low}..{high} {unit}")


def check_endpoint_name(name: str) -> None:
    """Refuse an endpoint name that SageMaker would refuse."""
    if not is_valid_name(name):
        raise UsageError(
            f"endpoint name {name!r} must be 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )


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
        if not ENV_NAME.match(key) or len(key) > MAX_ENV_CHARS:
            raise UsageError(f"environment variable name {key!r} is not valid")
        if len(value) > MAX_ENV_CHARS:
            raise UsageError(f"the value of {key} is longer than {MAX_ENV_CHARS} characters")


@dataclass
class _Run:
    """What one deploy run created, newest last, so that a failure can undo just that."""

    sagemaker: Client
    report: Report
    created: list[tuple[Kind, str]] = field(default_factory=list)

    def undo(self) -> str:
        """Delete what this run created; returns what to add to the error message."""
        removed, left = [], []
        for kind, name in reversed(self.created):
            try:
                delete(self.sagemaker, kind, name)
                removed.append(f"{kind.label} {name}")
            except Exception as exc:  # the run's own failure is the error to raise
                reason = explain(exc)
                why = reason.message if reason is not None else repr(exc)
                left.append(f"{kind.label} {name} ({why}): `{kind.cli_delete} {name}`")
        self.created.clear()
        note = f"; removed what this run had created: {', '.join(removed)}" if removed else ""
        return note + (f"; could not remove {'; '.join(left)}" if left else "")


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
    spec.validate(region=sagemaker.meta.region_name)
    name = spec.resource_name()
    current = describe_endpoint(sagemaker, spec.endpoint_name)
    if current is not None:
        _check_redeploy(current, name, update)
        if current["EndpointConfigName"] == name:
            report(f"endpoint {spec.endpoint_name} already runs this configuration ({name})")
            final = _finish(sagemaker, spec.endpoint_name, wait, timeout_s, poll_s, report)
            _remove_replaced(sagemaker, spec.endpoint_name, final or current, report)
            return _result(final or current, name, "unchanged")
    run = _Run(sagemaker, report)
    try:
        _ensure_model(sagemaker, spec, name, run)
        _ensure_config(sagemaker, spec, name, run)
        action = _start(sagemaker, spec, name, current, report)
    except BaseException as exc:  # Ctrl-C included: nothing uses what was made yet
        raise_in_context(exc, before=_option_at_fault(exc, spec), after=run.undo())
    if not wait:
        if current is not None:
            _say_what_stays(sagemaker, spec.endpoint_name, current, name, report)
        return _result(describe_endpoint(sagemaker, spec.endpoint_name) or {}, name, action)
    final = _await_switch(sagemaker, spec.endpoint_name, name, current, run, timeout_s, poll_s)
    _remove_replaced(sagemaker, spec.endpoint_name, final, report)
    return _result(final, name, action)


def _await_switch(
    sagemaker: Client,
    endpoint: str,
    name: str,
    current: Mapping[str, Any] | None,
    run: _Run,
    timeout_s: float,
    poll_s: float,
) -> dict[str, Any]:
    """Wait until the endpoint is InService on config ``name``; say what is left if not."""
    try:
        final = wait_in_service(sagemaker, endpoint, timeout_s, poll_s, run.report)
    except Exception as exc:
        raise_in_context(exc, after=_left_behind(endpoint, name, current))
    if final["EndpointConfigName"] != name:
        # A failed update leaves the endpoint InService on its old config, with the reason.
        raise DeploymentFailedError(
            f"endpoint {endpoint} rolled back to {final['EndpointConfigName']}, which it "
            f"still runs: the update to {name} failed: {_failure_reason(final)}{run.undo()}"
        )
    return final


def _check_redeploy(current: Mapping[str, Any], name: str, update: bool) -> None:
    endpoint = current["EndpointName"]
    status = current["EndpointStatus"]
    if status == FAILED:
        raise DeploymentFailedError(
            f"endpoint {endpoint} exists and is Failed: {_failure_reason(current)}. "
            f"Remove it with `mme teardown {endpoint}`, then deploy again."
        )
    if current["EndpointConfigName"] != name and not update:
        raise AlreadyDeployedError(
            f"endpoint {endpoint} already exists with another configuration "
            f"({current['EndpointConfigName']}, status {status}). Pass --update to create "
            f"{name} and switch the endpoint to it with UpdateEndpoint (no downtime), or "
            f"`mme teardown {endpoint}` first."
        )


def _ensure_model(sagemaker: Client, spec: DeploySpec, name: str, run: _Run) -> None:
    if exists(partial(sagemaker.describe_model, ModelName=name)):
        run.report(f"model {name} exists")
        return
    container: dict[str, Any] = {
        "Image": spec.image,
        "Mode": "MultiModel",
        "ModelDataUrl": spec.model_data_url,
        "Environment": dict(spec.environment),
    }
    if spec.model_cache is not None:
        container["MultiModelConfig"] = {"ModelCacheSetting": spec.model_cache}
    if spec.metrics_path is not None:
        # SageMaker scrapes this path of the container's port; the container must serve it.
        container["ContainerMetricsConfig"] = {
            "MetricsEndpoints": [
                {
                    "MetricsEndpointPath": spec.metrics_path,
                    "MetricPublishFrequencyInSeconds": spec.metrics_frequency_s,
                }
            ]
        }
        if spec.metrics_path != Settings.metrics_path:
            container["Environment"][METRICS_PATH_VAR] = spec.metrics_path
    sagemaker.create_model(
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn=spec.role_arn,
        Tags=tags(spec.endpoint_name),
    )
    run.created.append((MODELS, name))
    scraped = (
        f"SageMaker scrapes {spec.metrics_path} every {spec.metrics_frequency_s} s"
        if spec.metrics_path is not None
        else "no metrics scraped"
    )
    run.report(f"created model {name} (MultiModel, {spec.model_data_url}; {scraped})")


def _ensure_config(sagemaker: Client, spec: DeploySpec, name: str, run: _Run) -> None:
    if exists(partial(sagemaker.describe_endpoint_config, EndpointConfigName=name)):
        run.report(f"endpoint config {name} exists")
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
        EndpointConfigName=name,
        ProductionVariants=[variant],
        # Said either way: new configs have it on unless told, old ones off.
        MetricsConfig={"EnableDetailedObservability": spec.metrics_path is not None},
        Tags=tags(spec.endpoint_name),
    )
    run.created.append((CONFIGS, name))
    run.report(
        f"created endpoint config {name} "
        f"({spec.instance_count} x {spec.instance_type}, variant {spec.variant_name})"
    )


def _start(
    sagemaker: Client,
    spec: DeploySpec,
    name: str,
    current: Mapping[str, Any] | None,
    report: Report,
) -> str:
    """CreateEndpoint, or UpdateEndpoint for an existing one; returns the action's name."""
    if current is None:
        sagemaker.create_endpoint(
            EndpointName=spec.endpoint_name, EndpointConfigName=name, Tags=tags(spec.endpoint_name)
        )
        report(f"creating endpoint {spec.endpoint_name}")
        return "created"
    # UpdateEndpoint swaps the config with no downtime; the old config stays until removed.
    sagemaker.update_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
    report(f"updating endpoint {spec.endpoint_name} to {name}")
    return "updated"


def _option_at_fault(exc: BaseException, spec: DeploySpec) -> str:
    """Name the option when SageMaker refused a value that one option set."""
    if not isinstance(exc, ClientError):
        return ""
    message = str(exc.response.get("Error", {}).get("Message", ""))
    for field_name, (option, attribute) in OPTION_FIELDS.items():
        if f"{field_name}'" in message:  # "at 'productionVariants.1.member.instanceType'"
            return f"{option} {getattr(spec, attribute)}: SageMaker refused it: "
    return ""


def _left_behind(endpoint: str, name: str, current: Mapping[str, Any] | None) -> str:
    """What a run leaves when the endpoint call was taken but waiting for it failed."""
    if current is None:
        return (
            f"; left: endpoint {endpoint}, endpoint config {name} and model {name}: "
            f"`mme teardown {endpoint}` removes them"
        )
    return (
        f"; left: endpoint config {name} and model {name} beside the replaced "
        f"{current['EndpointConfigName']}: once {endpoint} is InService, run this command "
        "again to finish; it deletes what deploy made that the endpoint no longer uses"
    )


def _say_what_stays(
    sagemaker: Client, endpoint: str, current: Mapping[str, Any], name: str, report: Report
) -> None:
    old = current["EndpointConfigName"]
    models = ", ".join(config_models(describe_endpoint_config(sagemaker, old))) or "none"
    report(
        f"not waiting: the replaced endpoint config {old} and model {models} stay until "
        f"{endpoint} runs {name}; run this command again once it is InService: it deletes "
        "what deploy made that the endpoint no longer uses"
    )


def _remove_replaced(
    sagemaker: Client, endpoint: str, described: Mapping[str, Any], report: Report
) -> None:
    """Once InService, delete the configs and models deploy made that the endpoint left."""
    if described.get("EndpointStatus") == IN_SERVICE:
        remove_owned(
            sagemaker, endpoint, report, described["EndpointConfigName"], "deleted the replaced"
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
            raise DeploymentFailedError(
                f"endpoint {endpoint} is {status}: {_failure_reason(description)}. Its logs "
                f"are in CloudWatch under /aws/sagemaker/Endpoints/{endpoint}."
            )
        if waited + poll_s > timeout_s:
            raise WaitTimeoutError(
                f"endpoint {endpoint} is still {status} after {waited:.0f}s (--wait-timeout "
                f"{timeout_s:.0f}); it goes on in the background: check it with "
                f"`aws sagemaker describe-endpoint --endpoint-name {endpoint}`"
            )
        time.sleep(poll_s)


def _failure_reason(description: Mapping[str, Any]) -> str:
    # Without its full stop: the messages go on after it.
    return str(description.get("FailureReason") or "no reason given").rstrip(".")


def _result(description: Mapping[str, Any], name: str, action: str) -> Deployment:
    return Deployment(
        endpoint_name=description.get("EndpointName", ""),
        endpoint_arn=description.get("EndpointArn", ""),
        status=description.get("EndpointStatus", "unknown"),
        model_name=name,
        config_name=description.get("EndpointConfigName", name),
        action=action,
    )
