"""Errors that carry their HTTP status, and the one place where exceptions become statuses."""

from __future__ import annotations

from http import HTTPStatus

from sagemaker_inference.errors import BaseInferenceToolkitError

MAX_MESSAGE_CHARS = 500


class ContainerError(BaseInferenceToolkitError):
    """An error with the HTTP status that the client should get."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(int(self.status), message, self.status.phrase)


class BadRequestError(ContainerError):
    """The request body cannot be decoded (400)."""

    status = HTTPStatus.BAD_REQUEST


class NotAcceptableError(ContainerError):
    """No supported content type is in the request's ``Accept`` (406)."""

    status = HTTPStatus.NOT_ACCEPTABLE


class PayloadTooLargeError(ContainerError):
    """The request or the response is larger than the payload limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedContentTypeError(ContainerError):
    """The request's ``Content-Type`` is not one the model accepts (415)."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class InsufficientMemoryError(ContainerError):
    """The model or the request needs more memory than there is (507)."""

    status = HTTPStatus.INSUFFICIENT_STORAGE


class ModelLoadError(ContainerError):
    """The model's files or code cannot be loaded (500)."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means that memory ran out (host RAM, or a GPU's)."""
    if isinstance(exc, (MemoryError, InsufficientMemoryError)):
        return True
    # torch.OutOfMemoryError subclasses RuntimeError; older CUDA errors only say it in words.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def short_message(exc: BaseException) -> str:
    """One line that says what went wrong, without a stack trace."""
    if isinstance(exc, BaseInferenceToolkitError):
        text = str(exc.message)
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:MAX_MESSAGE_CHARS]


def http_status(exc: BaseException) -> int:
    """The HTTP status for any exception raised while loading or invoking a model."""
    if is_out_of_memory(exc):
        return int(HTTPStatus.INSUFFICIENT_STORAGE)
    if isinstance(exc, BaseInferenceToolkitError):
        return int(exc.status_code)
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)
