"""InvokeEndpoint on the wire: routes, request validation, and responses botocore parses.

Ground truth is botocore's ``sagemaker-runtime`` model; its limits are in
:mod:`mme.sagemaker_contract`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from mme.endpoint.errors import (
    EndpointError,
    LengthRequiredError,
    NotFoundError,
    ValidationError,
)
from mme.sagemaker_contract import is_valid_name, target_model_problem

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"
REQUEST_ID_HEADER = "x-amzn-RequestId"
ERROR_TYPE_HEADER = "x-amzn-ErrorType"
# What the platform passes on to the container; everything else (signature, SDK headers) stays.
FORWARDED_HEADERS = (
    "Content-Type",
    "Accept",
    CUSTOM_ATTRIBUTES_HEADER,
    TARGET_MODEL_HEADER,
    INFERENCE_ID_HEADER,
)
_ENDPOINT_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")


@dataclass(frozen=True)
class Route:
    """What a request asks for: ``invoke`` (with the endpoint name, if in the path),
    ``ping`` or ``metrics``."""

    action: str
    endpoint_name: str | None = None


@dataclass
class Response:
    """An HTTP answer: status, headers and body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after answering


def route(method: str, path: str) -> Route:
    """The route of ``method path``; raise NotFoundError for anything else."""
    path = path.split("?", 1)[0]
    if method == "GET" and path == "/ping":
        return Route("ping")
    if method == "GET" and path == "/metrics":
        return Route("metrics")
    if method == "POST" and path == "/invocations":
        return Route("invoke")  # the SageMaker SDK's local mode: no name in the path
    match = _ENDPOINT_PATH.match(path)
    if method == "POST" and match:
        return Route("invoke", match.group("name"))
    raise NotFoundError(f"no route for {method} {path}")


def body_length(content_length: str | None, chunked: bool) -> int:
    """The declared body length; 411 without one (the size limit is the caller's check)."""
    if chunked or content_length is None:
        raise LengthRequiredError("send the body with a Content-Length header")
    try:
        length = int(content_length)
    except ValueError:
        raise ValidationError(f"Content-Length {content_length!r} is not a number") from None
    if length < 0:
        raise ValidationError(f"Content-Length {length} is negative")
    return length


def check_endpoint(name: str | None, expected: str) -> str:
    """The endpoint name, which must be ours (a call without one in the path is ours too)."""
    if name is None:
        return expected
    if name != expected or not is_valid_name(name):
        raise ValidationError(f"Endpoint {name} of account 000000000000 not found.")
    return name


def check_target_model(value: str | None, request_id: str, endpoint_name: str) -> str:
    """The TargetModel header's value: present, and one that InvokeEndpoint takes."""
    if value is None or value == "":
        raise ValidationError(
            f"Request {request_id} is missing a target model header. Endpoint "
            f"{endpoint_name} is a multi-model endpoint: set TargetModel "
            f"({TARGET_MODEL_HEADER})."
        )
    problem = target_model_problem(value)
    if problem is not None:
        raise ValidationError(f"TargetModel {problem}.")
    return value


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers (lower-case names) the container gets, with canonical names."""
    return {
        name: headers[name.lower()]
        for name in FORWARDED_HEADERS
        if headers.get(name.lower()) is not None
    }


def success_response(
    body: bytes,
    content_type: str | None,
    variant: str,
    custom_attributes: str | None,
    request_id: str,
) -> Response:
    """The 200 answer: the container's body as is, and the headers botocore maps."""
    headers = {
        "Content-Type": content_type or "application/octet-stream",
        VARIANT_HEADER: variant,
        REQUEST_ID_HEADER: request_id,
    }
    if custom_attributes:
        headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
    return Response(int(HTTPStatus.OK), body, headers)


def error_response(error: EndpointError, request_id: str) -> Response:
    """The answer for ``error``, in the form botocore parses for InvokeEndpoint's errors."""
    document = {**error.extra, "Message": error.message}
    headers = {"Content-Type": "application/json", REQUEST_ID_HEADER: request_id}
    if error.code:
        headers[ERROR_TYPE_HEADER] = error.code
    return Response(
        error.status, json.dumps(document).encode("utf-8"), headers, close=error.close_connection
    )


def text_response(status: int, text: str, content_type: str, request_id: str) -> Response:
    """A plain answer (``/ping``, ``/metrics``)."""
    headers = {"Content-Type": content_type, REQUEST_ID_HEADER: request_id}
    return Response(status, text.encode("utf-8"), headers)
