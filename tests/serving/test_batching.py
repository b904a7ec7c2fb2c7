"""Dynamic batching: the requests that wait for a model run as one batch, each with its answer.

A request whose body says "hold" keeps its worker busy for a moment, so that the requests
sent meanwhile queue in the gateway and go to the worker together. Each answer says how
many rows the ``predict_fn`` call that computed it had.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness.models import jpeg_bytes, make_model_dir
from harness.servers import NativeServer
from mme.packaging import build_example
from tests.container.conftest import EXAMPLE_CODE
from tests.container.test_container_api import TIMEOUT, load

pytestmark = pytest.mark.server

BATCH_AWARE = """
    import json, time, torch
    from mme.errors import BadRequestError, UnsupportedContentTypeError
    MAX_BATCH_SIZE = 4
    def model_fn(model_dir):
        return None
    def input_fn(body, content_type):
        if content_type != "application/json":
            raise UnsupportedContentTypeError(f"JSON only, not {content_type}")
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, (int, float)):
            raise BadRequestError("send a number")
        return torch.tensor([[float(value)]])
    def predict_fn(batch, model):
        if (batch == -1).any():  # "hold": keep the worker busy while others queue
            time.sleep(1.0)
        if (batch == 13).any():
            raise ValueError("13 is unlucky")
        rows = torch.full((batch.shape[0], 1), float(batch.shape[0]))
        return torch.cat([batch, rows], dim=1)
    def output_fn(prediction, accept):
        value, rows = prediction[0].tolist()
        return json.dumps({"value": value, "batch": int(rows)}), "application/json"
"""
TRANSFORM_ONLY = """
    import json
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        return json.dumps({"value": json.loads(data)}), "application/json"
"""


@pytest.fixture(scope="module", params=["prefork", "stock"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NativeServer]:
    root = tmp_path_factory.mktemp("models")
    make_model_dir(root, "aware", {"inference.py": BATCH_AWARE}, weights=False)
    make_model_dir(root, "whole", {"inference.py": TRANSFORM_ONLY}, weights=False)
    example = build_example(
        "resnet_18", EXAMPLE_CODE, tmp_path_factory.mktemp("staging"), pretrained=False
    )
    (root / "resnet_18").mkdir()
    example.rename(root / "resnet_18" / "model")
    instance = NativeServer(root, env={"MME_WORKER_MODE": request.param}).start()
    try:
        for name in ("aware", "whole", "resnet_18"):
            assert load(instance, name).status_code == 200
        yield instance
    finally:
        instance.stop()


def post(
    server: NativeServer, name: str, body: bytes, content_type: str = "application/json"
) -> requests.Response:
    return requests.post(
        f"{server.url}/models/{name}/invoke",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/json"},
        timeout=TIMEOUT,
    )


def while_busy(
    server: NativeServer, name: str, hold: bytes, bodies: list[tuple[bytes, str]]
) -> list[requests.Response]:
    """Send ``hold``, then ``bodies`` at once while it runs; the answers to ``bodies``."""
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        holding = pool.submit(post, server, name, hold)
        time.sleep(0.3)  # the hold reaches the worker first; a late one only makes batches smaller
        answers = list(pool.map(lambda b: post(server, name, b[0], b[1]), bodies))
        assert holding.result().status_code == 200
    return answers


def test_requests_that_wait_together_run_as_one_batch(server: NativeServer) -> None:
    values = list(range(20, 28))
    answers = while_busy(
        server, "aware", b"-1", [(str(v).encode(), "application/json") for v in values]
    )
    assert [a.status_code for a in answers] == [200] * len(values)
    assert [a.json()["value"] for a in answers] == values  # each got its own row back
    batches = [a.json()["batch"] for a in answers]
    assert max(batches) > 1  # they were batched...
    assert max(batches) <= 4  # ...within the model's MAX_BATCH_SIZE


def test_a_bad_request_in_a_batch_fails_alone(server: NativeServer) -> None:
    bodies = [
        (b"31", "application/json"),
        (b"1,2", "text/csv"),
        (b"[1, 2", "application/json"),
        (b"32", "application/json"),
    ]  # MAX_BATCH_SIZE of them: one batch
    answers = while_busy(server, "aware", b"-1", bodies)
    assert [a.status_code for a in answers] == [200, 415, 400, 200]
    good = [answers[0].json(), answers[3].json()]
    assert good == [{"value": 31, "batch": 2}, {"value": 32, "batch": 2}]  # ran together
    for answer in answers[1:3]:
        assert answer.headers["Content-Type"].startswith("application/json")
        assert "Traceback" not in answer.json()["message"]


def test_a_batch_that_fails_in_predict_fn_runs_request_by_request(server: NativeServer) -> None:
    answers = while_busy(
        server, "aware", b"-1", [(str(v).encode(), "application/json") for v in (41, 13, 42)]
    )
    assert [a.status_code for a in answers] == [200, 500, 200]
    assert [answers[i].json() for i in (0, 2)] == [
        {"value": 41, "batch": 1},
        {"value": 42, "batch": 1},
    ]
    assert "13 is unlucky" in answers[1].json()["message"]


def test_a_transform_fn_model_is_never_batched(server: NativeServer) -> None:
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda v: post(server, "whole", str(v).encode()), range(6)))
    assert [a.json()["value"] for a in answers] == list(range(6))


def test_batched_resnet_answers_equal_single_ones(server: NativeServer) -> None:
    images = [jpeg_bytes(seed=seed) for seed in range(6)]
    alone = [post(server, "resnet_18", image, "image/jpeg").json() for image in images]
    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(lambda i: post(server, "resnet_18", i, "image/jpeg"), images))
    assert all(answer.status_code == 200 for answer in together)
    for single, batched in zip(alone, (a.json() for a in together), strict=True):
        assert [entry["class"] for entry in batched] == [entry["class"] for entry in single]
        for one, other in zip(single, batched, strict=True):
            assert one["probability"] == pytest.approx(other["probability"], abs=1e-4)
