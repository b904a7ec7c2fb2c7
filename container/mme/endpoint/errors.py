"""The errors an InvokeEndpoint call can end with, each with its HTTP status and error code.

The code is what botocore reads from the ``x-amzn-ErrorType`` header to pick the
exception class (``client.exceptions.ModelError`` ...); the fields of ``extra`` become
top-level members of the JSON body, where botocore looks for modeled members such as
``OriginalStatusCode``. :func:`mme.endpoint.wire.error_response` renders them.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

MAX_ORIGINAL_MESSAGE_CHARS = 1000


class EndpointError(Exception):
    """A failed call: its HTTP status, the botocore error code, a message and extra members."""

    status: int = int(HTTPStatus.INTERNAL_SERVER_ERROR)
    code: str | None = "InternalFailure"
    close_connection: bool = False  # True when the request's body was left unread

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ValidationError(EndpointError):
    """The request cannot be served as sent (400): unknown endpoint, missing model, bad archive."""

    status = int(HTTPStatus.BAD_REQUEST)
    code = "ValidationError"


class PayloadTooLargeError(EndpointError):
    """The body is over the 6 MiB limit (413).

    Like the real service, no error type is sent, so botocore's error code is "413".
    """

    status = int(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    code = None


class LengthRequiredError(EndpointError):
    """The request has no Content-Length (411); chunked bodies are not accepted."""

    status = int(HTTPStatus.LENGTH_REQUIRED)
    code = None
    close_connection = True


class NotFoundError(EndpointError):
    """No such route (404)."""

    status = int(HTTPStatus.NOT_FOUND)
    code = "UnknownOperationException"


class ModelError(EndpointError):
    """The container answered a LOAD or an invocation with a non-2xx status (424)."""

    status = int(HTTPStatus.FAILED_DEPENDENCY)
    code = "ModelError"

    def __init__(self, original_status: int, original_message: str, log_stream_arn: str) -> None:
        original_message = original_message[:MAX_ORIGINAL_MESSAGE_CHARS]
        kind = "client" if 400 <= original_status < 500 else "server"
        super().__init__(
            f"Received {kind} error ({original_status}) from primary with message "
            f'"{original_message}". See the endpoint log for more information.',
            ErrorCode="CLIENT_ERROR_FROM_MODEL"
            if kind == "client"
            else "INTERNAL_FAILURE_FROM_MODEL",
            OriginalStatusCode=original_status,
            OriginalMessage=original_message,
            LogStreamArn=log_stream_arn,
        )
        self.original_status = original_status
        self.original_message = original_message


class ModelNotReadyError(EndpointError):
    """The model is still downloading or loading after the invocation timeout (429)."""

    status = int(HTTPStatus.TOO_MANY_REQUESTS)
    code = "ModelNotReadyException"


class ServiceUnavailableError(EndpointError):
    """The container cannot be reached (503); botocore retries these."""

    status = int(HTTPStatus.SERVICE_UNAVAILABLE)
    code = "ServiceUnavailable"


class InsufficientStorageError(EndpointError):
    """No room on the endpoint's disk for the model, even with every unloaded model removed
    (507)."""

    status = int(HTTPStatus.INSUFFICIENT_STORAGE)
    code = "InsufficientStorage"


class InternalDependencyError(EndpointError):
    """The model store (S3) failed for a reason other than a missing object (530)."""

    status = 530
    code = "InternalDependencyException"
