"""`mme invoke`: the wire format, ModelError, retries on ModelNotReadyException.

A small HTTP server on 127.0.0.1 answers as SageMaker's runtime does (botocore's model),
in the sequence each test gives it, and records what the real boto3 client sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from mme.aws.errors import ModelInvocationError
from mme.aws.invoke import InvokeRequest, invoke, runtime_config
from mme.aws.session import AwsTarget
from mme.sagemaker_contract import MAX_INVOKE_BODY_BYTES
from tests.aws.aws_cli import run_mme, text
from tests.http_threads import LoopbackHTTPServer, serving


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


class FakeRuntime(LoopbackHTTPServer):
    """Answers each POST with the next Reply, repeating the last one."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeRuntime

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append(
            Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        replies = self.server.replies
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        self.send_response(reply.status)
        for key, value in {"Content-Length": str(len(reply.body)), **reply.headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def runtime(aws_env: dict[str, str]) -> Iterator[FakeRuntime]:
    with serving(FakeRuntime()) as server:
        yield server


def _error(status: int, code: str, **members: object) -> Reply:
    return Reply(
        status,
        json.dumps({"Message": f"{code} happened", **members}).encode(),
        {"Content-Type": "application/json", "x-amzn-ErrorType": code},
    )


OK = Reply(
    200,
    b'{"label": "tabby"}',
    {"Content-Type": "application/json", "x-Amzn-Invoked-Production-Variant": "AllTraffic"},
)


def test_invoke_sends_target_model_and_headers_and_prints_the_body(
    runtime: FakeRuntime, tmp_path: Path
) -> None:
    runtime.replies = [OK]
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"\xff\xd8jpeg")

    called = run_mme(
        "invoke", "my-endpoint", "--endpoint-url", runtime.url,
        "--target-model", "team-a/resnet-v1.tar.gz", "--body", str(image),
        "--content-type", "application/x-image", "--accept", "application/json",
        "--custom-attributes", "trace=1",
    )  # fmt: skip

    assert called.returncode == 0, text(called.stderr)
    assert called.stdout == b'{"label": "tabby"}'
    [request] = runtime.seen
    assert request.path == "/endpoints/my-endpoint/invocations"
    assert request.body == b"\xff\xd8jpeg"
    assert request.headers["x-amzn-sagemaker-target-model"] == "team-a/resnet-v1.tar.gz"
    assert request.headers["content-type"] == "application/x-image"
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-amzn-sagemaker-custom-attributes"] == "trace=1"


def test_invoke_reads_stdin_and_writes_an_output_file(runtime: FakeRuntime, tmp_path: Path) -> None:
    runtime.replies = [OK]
    out = tmp_path / "answer.json"

    called = run_mme(
        "invoke", "ep", "--endpoint-url", runtime.url, "--target-model", "m.tar.gz",
        "--output", str(out), stdin=b'{"x": 1}',
    )  # fmt: skip

    assert called.returncode == 0, text(called.stderr)
    assert runtime.seen[0].body == b'{"x": 1}'
    assert out.read_bytes() == b'{"label": "tabby"}'
    assert called.stdout == b""
    assert f"wrote 18 bytes (application/json) to {out}" in text(called.stderr)


def test_a_model_error_shows_the_original_status_and_message(runtime: FakeRuntime) -> None:
    runtime.replies = [
        _error(
            424,
            "ModelError",
            ErrorCode="CLIENT_ERROR_FROM_MODEL",
            OriginalStatusCode=415,
            OriginalMessage="content type text/csv is not supported",
            LogStreamArn="arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/ep",
        )
    ]

    called = run_mme(
        "invoke", "ep", "--endpoint-url", runtime.url, "--target-model", "m.tar.gz",
        "--content-type", "text/csv", stdin=b"1,2",
    )  # fmt: skip

    assert called.returncode == 1
    err = text(called.stderr)
    assert "OriginalStatusCode=415" in err
    assert "OriginalMessage='content type text/csv is not supported'" in err
    assert "log-group:/aws/sagemaker/Endpoints/ep" in err
    assert "Traceback" not in err
    assert called.stdout == b""
    assert len(runtime.seen) == 1  # a model error is not retried


def test_model_not_ready_is_retried_until_the_model_answers(runtime: FakeRuntime) -> None:
    not_ready = _error(429, "ModelNotReadyException")
    runtime.replies = [not_ready, not_ready, OK]
    client = AwsTarget(endpoint_url=runtime.url).client("sagemaker-runtime", runtime_config())

    result = invoke(client, InvokeRequest("ep", "m.tar.gz", b"{}"))

    assert result.body == b'{"label": "tabby"}'
    assert result.invoked_variant == "AllTraffic"
    assert len(runtime.seen) == 3


def test_model_not_ready_after_every_retry_is_reported(runtime: FakeRuntime) -> None:
    runtime.replies = [_error(429, "ModelNotReadyException")]

    called = run_mme(
        "invoke", "ep", "--endpoint-url", runtime.url, "--target-model", "m.tar.gz",
        "--retries", "1", stdin=b"{}",
    )  # fmt: skip

    assert called.returncode == 1
    assert "m.tar.gz is still loading after every retry" in text(called.stderr)
    assert len(runtime.seen) == 2


def test_model_error_is_raised_with_its_members(runtime: FakeRuntime) -> None:
    runtime.replies = [_error(424, "ModelError", OriginalStatusCode=500, OriginalMessage="boom")]
    client = AwsTarget(endpoint_url=runtime.url).client("sagemaker-runtime", runtime_config())

    with pytest.raises(ModelInvocationError) as raised:
        invoke(client, InvokeRequest("ep", "m.tar.gz", b"{}"))

    assert (raised.value.original_status, raised.value.original_message) == (500, "boom")


def test_invoke_refuses_an_oversized_body_before_sending(runtime: FakeRuntime) -> None:
    runtime.replies = [OK]

    called = run_mme(
        "invoke", "ep", "--endpoint-url", runtime.url, "--target-model", "m.tar.gz",
        stdin=b"x" * (MAX_INVOKE_BODY_BYTES + 1),
    )  # fmt: skip

    assert called.returncode == 2
    assert "at most 6291456" in text(called.stderr)
    assert runtime.seen == []


def test_invoke_works_against_moto_runtime(moto_url: str) -> None:
    # moto's runtime answers fixed data whatever the model; it proves the AWS-shaped path.
    called = run_mme(
        "invoke", "any", "--endpoint-url", moto_url, "--target-model", "m.tar.gz", stdin=b"{}"
    )

    assert called.returncode == 0, text(called.stderr)
    assert called.stdout == b"body"
