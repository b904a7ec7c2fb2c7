"""The real boto3 client against `mme endpoint` (with its own container), models in moto's S3.

moto runs as a real HTTP server (ThreadedMotoServer); the endpoint reads from it with
boto3 through --s3-endpoint-url, as it would from MinIO or AWS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from harness.endpoint import DUMMY_CREDENTIALS, REGION, Endpoint, base_env
from harness.models import SCALED_INPUT, scaled_output
from mme.endpoint.command import free_port
from tests.endpoint.conftest import SCALES

pytestmark = pytest.mark.server

BUCKET = "mme-test-models"
PREFIX = "models/v1/"
NAME = "s3-endpoint"
PAYLOAD = json.dumps(SCALED_INPUT).encode()


@pytest.fixture(scope="module")
def s3_url(archives: dict[str, Path]) -> Iterator[str]:
    """moto's S3 over HTTP on 127.0.0.1, holding every archive under ``PREFIX``."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=url, region_name=REGION, **DUMMY_CREDENTIALS)
        s3.create_bucket(Bucket=BUCKET)
        for name, path in archives.items():
            s3.upload_file(str(path), BUCKET, PREFIX + name)
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def endpoint(s3_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """`mme endpoint` starting its own container, reading s3://BUCKET/PREFIX from moto."""
    work = tmp_path_factory.mktemp("s3-endpoint")
    server = Endpoint(
        NAME,
        [
            "--model-data-url",
            f"s3://{BUCKET}/{PREFIX}",
            "--s3-endpoint-url",
            s3_url,
            "--cache-dir",
            str(work / "cache"),
            "--max-model-mb",
            "8",
        ],
        work / "endpoint.log",
    )
    server.start(base_env())
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, server.log()[-3000:]


def _invoke(endpoint: Endpoint, target: str | None, body: bytes = PAYLOAD, **extra: Any) -> Any:
    arguments = {
        "EndpointName": endpoint.name,
        "ContentType": "application/json",
        "Accept": "application/json",
        "Body": body,
        **extra,
    }
    if target is not None:
        arguments["TargetModel"] = target
    return endpoint.client().invoke_endpoint(**arguments)


def _error(call: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def test_first_call_misses_second_hits_with_the_same_answer(endpoint: Endpoint) -> None:
    before = endpoint.metrics()

    first = _invoke(endpoint, "a.tar.gz")
    second = _invoke(endpoint, "a.tar.gz")

    answers = [json.loads(r["Body"].read()) for r in (first, second)]
    assert answers == [scaled_output(SCALES["a.tar.gz"])] * 2
    assert first["ContentType"] == "application/json"
    assert first["InvokedProductionVariant"] == "AllTraffic"
    assert first["ResponseMetadata"]["RequestId"] != second["ResponseMetadata"]["RequestId"]
    after = endpoint.metrics()
    assert after["Invocations_total"] - before["Invocations_total"] == 2
    assert after["ModelCacheHit_count"] - before["ModelCacheHit_count"] == 2
    assert after["ModelCacheHit_sum"] - before["ModelCacheHit_sum"] == 1  # the second call
    assert after["ModelDownloadingTime_count"] - before["ModelDownloadingTime_count"] == 1
    assert after["ModelLoadingTime_count"] - before["ModelLoadingTime_count"] == 1
    assert after["ModelLoadingWaitTime_count"] - before["ModelLoadingWaitTime_count"] == 1
    assert after["ModelLatency_count"] - before["ModelLatency_count"] == 2
    lines = endpoint.call_lines("a.tar.gz")
    assert "cache_hit=0" in lines[0] and "download_us=" in lines[0] and "load_us=" in lines[0]
    assert "cache_hit=1" in lines[1] and "download_us=" not in lines[1]


def test_headers_reach_the_model_and_nested_target_models_work(endpoint: Endpoint) -> None:
    answer = _invoke(
        endpoint,
        "sub/dir/echo.tar.gz",
        CustomAttributes="trace=1;user=x",
        InferenceId="inference-42",
    )

    seen = json.loads(answer["Body"].read())
    assert seen == {
        "y": scaled_output(19.0),
        "content_type": "application/json",
        "accept": "application/json",
        "custom-attributes": "trace=1;user=x",
        "target-model": "sub/dir/echo.tar.gz",
        "inference-id": "inference-42",
    }


def test_concurrent_first_calls_download_and_load_once(endpoint: Endpoint) -> None:
    callers = 4
    before = endpoint.metrics()
    barrier = threading.Barrier(callers)
    answers: list[Any] = []

    def call() -> None:
        client = endpoint.client()  # one client per thread, as boto3 asks
        barrier.wait(timeout=30)
        answer = client.invoke_endpoint(
            EndpointName=endpoint.name,
            Body=PAYLOAD,
            TargetModel="concurrent.tar.gz",
            ContentType="application/json",
        )
        answers.append(json.loads(answer["Body"].read()))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)

    assert answers == [scaled_output(SCALES["concurrent.tar.gz"])] * callers
    after = endpoint.metrics()
    assert after["ModelDownloadingTime_count"] - before["ModelDownloadingTime_count"] == 1
    assert after["ModelLoadingTime_count"] - before["ModelLoadingTime_count"] == 1
    assert after["ModelCacheHit_count"] - before["ModelCacheHit_count"] == callers
    fetched = [
        line
        for line in endpoint.log().splitlines()
        if "fetched s3://" in line and "concurrent.tar.gz" in line
    ]
    assert len(fetched) == 1
    assert len(endpoint.call_lines("concurrent.tar.gz")) == callers


def test_a_failing_model_raises_model_error_with_the_original_status(endpoint: Endpoint) -> None:
    client = endpoint.client()
    before = endpoint.metrics()

    with pytest.raises(client.exceptions.ModelError) as caught:
        _invoke(endpoint, "predict-fails.tar.gz")

    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 500
    assert "this model always fails" in response["OriginalMessage"]
    assert response["Error"]["Code"] == "ModelError"
    assert response["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{NAME}")
    assert response["ResponseMetadata"]["RetryAttempts"] == 0  # a model's fault: not retried
    after = endpoint.metrics()
    assert after["Invocation5XXErrors_sum"] - before["Invocation5XXErrors_sum"] == 1


def _raw_error(endpoint: Endpoint, target: str, body: bytes) -> tuple[str, dict[str, Any]]:
    """The error type header and JSON body, as they are on the wire."""
    answer = requests.post(
        f"{endpoint.url}/endpoints/{endpoint.name}/invocations",
        data=body,
        timeout=120,
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": target},
    )
    assert answer.headers["x-amzn-RequestId"]
    return answer.headers["x-amzn-ErrorType"], answer.json()


def test_bad_input_is_a_client_error_from_the_model(endpoint: Endpoint) -> None:
    error = _error(lambda: _invoke(endpoint, "a.tar.gz", body=b"{not json"))

    assert error.response["Error"]["Code"] == "ModelError"
    assert error.response["OriginalStatusCode"] == 400
    error_type, body = _raw_error(endpoint, "a.tar.gz", b"{not json")
    assert error_type == "ModelError"
    assert body["ErrorCode"] == "CLIENT_ERROR_FROM_MODEL"
    assert body["Message"].startswith("Received client error (400) from primary")


def test_a_model_that_cannot_load_is_a_model_error(endpoint: Endpoint) -> None:
    error = _error(lambda: _invoke(endpoint, "load-fails.tar.gz"))

    assert error.response["Error"]["Code"] == "ModelError"
    assert error.response["OriginalStatusCode"] == 500
    assert error.response["ResponseMetadata"]["RetryAttempts"] == 0
    _, body = _raw_error(endpoint, "load-fails.tar.gz", PAYLOAD)
    assert body["ErrorCode"] == "INTERNAL_FAILURE_FROM_MODEL"


@pytest.mark.parametrize(
    ("target", "endpoint_name", "words"),
    [
        ("missing.tar.gz", NAME, f"s3://{BUCKET}/{PREFIX}missing.tar.gz"),
        (None, NAME, "missing a target model header"),
        ("a.tar.gz", "some-other-endpoint", "Endpoint some-other-endpoint"),
    ],
)
def test_validation_errors(
    endpoint: Endpoint, target: str | None, endpoint_name: str, words: str
) -> None:
    client = endpoint.client()
    arguments = {"EndpointName": endpoint_name, "Body": PAYLOAD, "ContentType": "application/json"}
    if target is not None:
        arguments["TargetModel"] = target

    with pytest.raises(client.exceptions.ValidationError) as caught:
        client.invoke_endpoint(**arguments)

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert words in caught.value.response["Error"]["Message"]


def test_a_7_mb_body_gets_413_and_the_connection_still_works(endpoint: Endpoint) -> None:
    client = endpoint.client()
    body = b"[" + b"0," * (7 * 1024 * 1024 // 2) + b"0]"

    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(
            EndpointName=endpoint.name,
            TargetModel="a.tar.gz",
            ContentType="application/json",
            Body=body,
        )

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert caught.value.response["Error"]["Code"] == "413"
    answer = client.invoke_endpoint(
        EndpointName=endpoint.name,
        TargetModel="a.tar.gz",
        ContentType="application/json",
        Body=PAYLOAD,
    )
    assert json.loads(answer["Body"].read()) == scaled_output(SCALES["a.tar.gz"])


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("slip.tar.gz", "contains '..'"),
        ("link-slip.tar.gz", "points outside"),
        ("bomb.tar.gz", "expands to more than"),
    ],
)
def test_hostile_archives_are_refused_and_nothing_is_written(
    endpoint: Endpoint, tmp_path_factory: pytest.TempPathFactory, target: str, words: str
) -> None:
    client = endpoint.client()
    cache = Path(endpoint.args[endpoint.args.index("--cache-dir") + 1])

    with pytest.raises(client.exceptions.ValidationError) as caught:
        _invoke(endpoint, target)

    assert words in caught.value.response["Error"]["Message"]
    base = tmp_path_factory.getbasetemp()
    assert not list(base.rglob("escaped-by-*"))
    leftovers = [
        p.name
        for p in cache.iterdir()
        if p.name.startswith(".") and p.is_dir() and any(p.iterdir())
    ]
    assert leftovers == []  # no staging folder, no download left
    assert sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) < 8 * 1024 * 1024


def test_sdk_local_mode_route_ping_and_metrics(endpoint: Endpoint) -> None:
    answer = requests.post(
        f"{endpoint.url}/invocations",
        data=PAYLOAD,
        timeout=120,
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "a.tar.gz"},
    )
    assert answer.status_code == 200
    assert answer.json() == scaled_output(SCALES["a.tar.gz"])
    assert answer.headers["x-Amzn-Invoked-Production-Variant"] == "AllTraffic"
    assert requests.get(f"{endpoint.url}/ping", timeout=10).status_code == 200
    metrics = requests.get(f"{endpoint.url}/metrics", timeout=10)
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE ModelLoadingTime summary" in metrics.text
    assert f'LoadedModelCount{{EndpointName="{NAME}",VariantName="AllTraffic"}}' in metrics.text
