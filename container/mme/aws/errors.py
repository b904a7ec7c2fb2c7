"""Errors of the deploy commands, and the one place where any failure becomes a message.

Modules raise the specific errors below (or let botocore's errors through); `explain` turns
each into one line for the user and an exit status, so no command formats errors itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    TokenRetrievalError,
)

EXIT_FAILURE = 1  # the request was fine, but AWS (or the model) said no
EXIT_USAGE = 2  # the input is wrong; argparse uses the same status for bad options

ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403"}
)
BAD_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
MAX_SERVICE_MESSAGE_CHARS = 300
ENUM_EXAMPLES = 3  # of a list of allowed values, show this many and count the rest
# "Member must satisfy enum value set: [ml.t2.medium, ml.t2.large, ...]" (AWS's validation text)
ENUM_VALUES = re.compile(r"(enum value set: )\[([^\]]*)\]")


class DeployCommandError(Exception):
    """A failure whose message is already fit for the user."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DeployCommandError):
    """An option or argument cannot be used (a bad S3 prefix, an empty body, ...)."""

    exit_code = EXIT_USAGE


class ModelExistsError(DeployCommandError):
    """An upload would overwrite a model that an endpoint may have cached."""


class EndpointNotFoundError(DeployCommandError):
    """The named endpoint does not exist."""


class AlreadyDeployedError(DeployCommandError):
    """The endpoint exists with another configuration and no update was asked for."""


class DeploymentFailedError(DeployCommandError):
    """The endpoint went to ``Failed``; the message carries SageMaker's ``FailureReason``."""


class WaitTimeoutError(DeployCommandError):
    """The endpoint did not reach the awaited state within the time allowed."""


class NotOwnedError(DeployCommandError):
    """The resource exists but `mme deploy` did not make it, so it is not ours to delete."""


class ModelInvocationError(DeployCommandError):
    """The model container answered an invocation with an error (SageMaker's ModelError)."""

    def __init__(self, message: str, original_status: int | None, original_message: str) -> None:
        super().__init__(message)
        self.original_status = original_status
        self.original_message = original_message


@dataclass(frozen=True)
class Failure:
    """What the user is told, and the exit status."""

    message: str
    exit_code: int


def explain(exc: BaseException) -> Failure | None:
    """The message and exit status for ``exc``, or None for a bug that should show its trace."""
    if isinstance(exc, DeployCommandError):
        return Failure(str(exc), exc.exit_code)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, TokenRetrievalError)):
        return Failure(
            f"no usable AWS credentials ({exc}). Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or choose a profile with --profile or AWS_PROFILE "
            "(run `aws configure` or `aws sso login` to create one).",
            EXIT_FAILURE,
        )
    if isinstance(exc, ProfileNotFound):
        return Failure(f"{exc}: check --profile / AWS_PROFILE and ~/.aws/config", EXIT_USAGE)
    if isinstance(exc, NoRegionError):
        return Failure(
            "no AWS region: pass --region or set AWS_REGION (or a region in the profile)",
            EXIT_USAGE,
        )
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return Failure(
            f"cannot reach the service: {exc}. Check --endpoint-url, the region and the network.",
            EXIT_FAILURE,
        )
    if isinstance(exc, ReadTimeoutError):
        return Failure(f"the service did not answer in time: {exc}", EXIT_FAILURE)
    if isinstance(exc, ParamValidationError):
        return Failure(f"AWS would reject this request: {exc}", EXIT_USAGE)
    if isinstance(exc, ClientError):
        return _explain_client_error(exc)
    if isinstance(exc, S3UploadFailedError):
        # boto3 wraps the service's error in a message; the original is the context.
        cause = exc.__cause__ or exc.__context__
        return (explain(cause) if cause is not None else None) or Failure(
            _one_line(str(exc)), EXIT_FAILURE
        )
    return None


def raise_in_context(exc: BaseException, before: str = "", after: str = "") -> NoReturn:
    """Raise ``exc`` as a DeployCommandError with ``before`` and ``after`` around its message.

    A bug or an interrupt (what `explain` does not know) is raised unchanged, with its trace.
    """
    failure = explain(exc)
    if failure is None:
        raise exc
    raise DeployCommandError(f"{before}{failure.message}{after}", failure.exit_code) from exc


def _explain_client_error(exc: ClientError) -> Failure:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = _service_message(str(error.get("Message", "")), exc)
    operation = exc.operation_name
    if code in ACCESS_DENIED_CODES:
        return Failure(
            f"permission denied for {operation}: {message}. The IAM identity in use needs "
            "this action (see the IAM policy in docs/deploying.md).",
            EXIT_FAILURE,
        )
    if code in BAD_CREDENTIAL_CODES:
        return Failure(
            f"AWS rejected the credentials for {operation} ({code}): {message}. "
            "Refresh them or pick another --profile.",
            EXIT_FAILURE,
        )
    return Failure(f"{operation} failed: {code}: {message}", EXIT_FAILURE)


def _service_message(message: str, exc: ClientError) -> str:
    # A service (or a mock of one) that crashes answers with an HTML page: show the status.
    if not message or message.lstrip().startswith("<"):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"the service answered HTTP {status} without an error message"
    # Without its full stop: the callers go on with ". <advice>" or "; <more>".
    return _shorten(ENUM_VALUES.sub(_fewer_values, _one_line(message))).rstrip(".")


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _fewer_values(match: re.Match[str]) -> str:
    values = [value.strip() for value in match.group(2).split(",")]
    if len(values) <= ENUM_EXAMPLES:
        return match.group(0)
    shown = ", ".join(values[:ENUM_EXAMPLES])
    return f"{match.group(1)}[{shown}, … {len(values) - ENUM_EXAMPLES} more]"


def _shorten(message: str) -> str:
    """Cut a long message at a word boundary, marking the cut, so no word is cut in half."""
    if len(message) <= MAX_SERVICE_MESSAGE_CHARS:
        return message
    return message[:MAX_SERVICE_MESSAGE_CHARS].rsplit(" ", 1)[0] + " …"
