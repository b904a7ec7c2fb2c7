"""What the gateway accepts as a LOAD, and the 400 it answers for anything else."""

from __future__ import annotations

import json

import pytest

from mme.gateway.http import Request
from mme.gateway.management import LoadRequest, LoadRequestError, parse_load


def load_of(body: object) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request("POST", "/models", [(b"Content-Type", b"application/json")], raw)


def test_sagemakers_load_body_is_read_and_passed_on_alone() -> None:
    load = parse_load(
        load_of({"model_name": "a1b2", "url": "/opt/ml/models/a1b2/model", "batch_size": 8})
    )
    assert load == LoadRequest("a1b2", "/opt/ml/models/a1b2/model")
    assert json.loads(load.body()) == {"model_name": "a1b2", "url": "/opt/ml/models/a1b2/model"}


def test_mms_query_parameters_are_read_too() -> None:
    request = Request("POST", "/models?model_name=m%201&url=%2Fmodels%2Fm")
    assert parse_load(request) == LoadRequest("m 1", "/models/m")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "JSON object"),
        (b"not json", "JSON object"),
        (b"\xff\xfe", "JSON object"),
        ([1, 2], "JSON object"),
        ({"url": "/m"}, "model_name must be a non-empty string"),
        ({"model_name": 0, "url": ""}, "model_name must be a non-empty string"),
        ({"model_name": "", "url": "/m"}, "model_name must be a non-empty string"),
        ({"model_name": "m"}, "url must be the absolute path"),
        ({"model_name": "m", "url": ""}, "url must be the absolute path"),
        ({"model_name": "m", "url": "models/m"}, "url must be the absolute path"),
        ({"model_name": "m", "url": "http://example.com/m.tar.gz"}, "url must be the absolute"),
        ({"model_name": "a/b", "url": "/m"}, "must not contain '/'"),
        ({"model_name": "..", "url": "/m"}, "must not contain '/'"),
        ({"model_name": ".", "url": "/m"}, "must not contain '/'"),
        ({"model_name": "a\x00b", "url": "/m"}, "control characters"),
        ({"model_name": "line\nbreak", "url": "/m"}, "control characters"),
        ({"model_name": "\ud800", "url": "/m"}, "lone surrogates"),
    ],
)
def test_anything_else_is_refused_with_a_reason(body: object, says: str) -> None:
    with pytest.raises(LoadRequestError, match=says):
        parse_load(load_of(body))
