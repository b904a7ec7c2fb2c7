import pytest
import torch
from sagemaker_inference.errors import GenericInferenceToolkitError

from mme.errors import (
    BadRequestError,
    InsufficientMemoryError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedContentTypeError,
    http_status,
    short_message,
)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (BadRequestError("x"), 400),
        (NotAcceptableError("x"), 406),
        (PayloadTooLargeError("x"), 413),
        (UnsupportedContentTypeError("x"), 415),
        (InsufficientMemoryError("x"), 507),
        (MemoryError(), 507),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 507),
        (RuntimeError("CUDA error: out of memory"), 507),
        (GenericInferenceToolkitError(429, "slow down"), 429),
        (ValueError("bad"), 500),
        (RuntimeError("shape mismatch"), 500),
    ],
)
def test_every_exception_maps_to_one_status(exc: BaseException, status: int) -> None:
    assert http_status(exc) == status


def test_short_message_is_one_line_with_the_type_of_unexpected_errors() -> None:
    assert short_message(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert short_message(BadRequestError("not JSON")) == "not JSON"
    assert short_message(KeyError()) == "KeyError"
    assert len(short_message(ValueError("x" * 5000))) == 500
