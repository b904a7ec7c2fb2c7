"""InvokeEndpoint with a TargetModel, using the client settings AWS recommends for MMEs.

A model that is not loaded yet makes SageMaker answer ModelNotReadyException (HTTP 429)
while it goes on loading; AWS's advice is a 70 s read timeout and retries. botocore's
"standard" retry mode does not retry that modeled error, its "legacy" mode does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.handlers import disable_signing

from mme.aws.errors import DeployCommandError, ModelInvocationError, UsageError
from mme.aws.model_store import check_target_model
from mme.aws.session import Client, is_loopback
from mme.sagemaker_contract import MAX_INVOKE_BODY_BYTES

READ_TIMEOUT_S = 70  # SageMaker answers within 60 s; AWS recommends 70 s on the client
DEFAULT_RETRIES = 4


@dataclass(frozen=True)
class InvokeRequest:
    """One InvokeEndpoint call."""

    endpoint_name: str
    target_model: str
    body: bytes
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    target_variant: str | None = None

    def validate(self) -> None:
        """Raise UsageError for what the service would reject anyway."""
        check_target_model(self.target_model)
        if len(self.body) > MAX_INVOKE_BODY_BYTES:
            raise UsageError(
                f"the body is {len(self.body)} bytes; InvokeEndpoint takes at most "
                f"{MAX_INVOKE_BODY_BYTES} (6 MiB)"
            )

    def parameters(self) -> dict[str, object]:
        """The keyword arguments of ``invoke_endpoint``."""
        optional = {
            "ContentType": self.content_type,
            "Accept": self.accept,
            "CustomAttributes": self.custom_attributes,
            "TargetVariant": self.target_variant,
        }
        parameters: dict[str, object] = {
            "EndpointName": self.endpoint_name,
            "TargetModel": self.target_model,
            "Body": self.body,
        }
        parameters.update({key: value for key, value in optional.items() if value})
        return parameters


@dataclass(frozen=True)
class InvokeResult:
    """The model's answer."""

    body: bytes
    content_type: str
    invoked_variant: str
    custom_attributes: str


class ModelNotReadyError(DeployCommandError):
    """The model was still loading after every retry."""


def runtime_config(retries: int = DEFAULT_RETRIES) -> Config:
    """Client settings for sagemaker-runtime: a 70 s read timeout, and retries on 429."""
    return Config(read_timeout=READ_TIMEOUT_S, retries={"mode": "legacy", "max_attempts": retries})


def _invoke_endpoint(runtime: Client, parameters: dict[str, object]) -> Any:
    """InvokeEndpoint, signed; unsigned when no credentials are found and the URL is a
    loopback one (`mme endpoint` checks no signature, so no AWS account is needed there)."""
    try:
        return runtime.invoke_endpoint(**parameters)
    except NoCredentialsError:
        if not is_loopback(runtime.meta.endpoint_url):
            raise
    runtime.meta.events.register_first("choose-signer", disable_signing)
    return runtime.invoke_endpoint(**parameters)


def invoke(runtime: Client, request: InvokeRequest) -> InvokeResult:
    """Call InvokeEndpoint; a model-side failure raises ModelInvocationError."""
    request.validate()
    try:
        response = _invoke_endpoint(runtime, request.parameters())
    except ClientError as exc:
        raise _model_failure(exc, request) or exc from None
    return InvokeResult(
        body=response["Body"].read(),
        content_type=response.get("ContentType", ""),
        invoked_variant=response.get("InvokedProductionVariant", ""),
        custom_attributes=response.get("CustomAttributes", ""),
    )


def _model_failure(exc: ClientError, request: InvokeRequest) -> DeployCommandError | None:
    code = exc.response.get("Error", {}).get("Code")
    message = exc.response.get("Error", {}).get("Message", "")
    if code == "ModelError":
        status = exc.response.get("OriginalStatusCode")
        original = str(exc.response.get("OriginalMessage", ""))
        log_stream = exc.response.get("LogStreamArn")
        where = f" Logs: {log_stream}" if log_stream else ""
        return ModelInvocationError(
            f"model {request.target_model} failed: OriginalStatusCode={status} "
            f"OriginalMessage={original!r}.{where}",
            int(status) if status is not None else None,
            original,
        )
    if code == "ModelNotReadyException":
        return ModelNotReadyError(
            f"model {request.target_model} is still loading after every retry ({message}); "
            "try again shortly"
        )
    return None
