"""Property-based tests: bad input at `mme endpoint`, in front of a real `mme serve`.

Whatever hypothesis sends (TargetModels that try to leave the prefix, unicode, odd
endpoint names, methods and paths, content types, bodies, huge headers), the endpoint
answers with a 2xx or a 4xx that botocore can parse, never a 5xx (its one model never
raises), and answers /ping and serves that model afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.endpoint import ContainerProcess, Endpoint, base_env, fronting
from harness.models import scaled_model
from mme.packaging import pack
from tests.faults.test_bad_input import bodies, content_types, header_values

pytestmark = pytest.mark.server

NAME = "fuzz"
TARGET = "echo.tar.gz"
TIMEOUT_S = 120
NEVER_RAISES = """
import json
def model_fn(model_dir):
    return None
def transform_fn(model, data, content_type, accept):
    return json.dumps({"length": len(data)}), "application/json"
"""
FEW = settings(
    max_examples=25,
    deadline=timedelta(seconds=30),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """`mme endpoint` over a folder with one model that answers with its body's length."""
    root = tmp_path_factory.mktemp("endpoint-fuzz")
    pack(scaled_model(root / "source", 1.0, NEVER_RAISES), root / "models" / TARGET)
    (root / "outside.tar.gz").write_bytes((root / "models" / TARGET).read_bytes())
    cache = root / "cache"
    container = ContainerProcess(root / "serve.log").start_serving()
    server = Endpoint(
        NAME,
        fronting(container.url, root / "models", cache),
        root / "endpoint.log",
    )
    try:
        server.start(base_env())
        yield server
        assert server.stop() == 0, server.log()[-3000:]
    finally:
        server.stop()
        container.stop()


def _invoke(
    endpoint: Endpoint, path: str, headers: dict[str, bytes | str], body: bytes
) -> requests.Response:
    return requests.post(f"{endpoint.url}{path}", data=body, headers=headers, timeout=TIMEOUT_S)


def _assert_answered_cleanly(answer: requests.Response) -> None:
    assert answer.status_code < 500, answer.text[:500]
    if answer.status_code >= 400:
        assert "Traceback" not in answer.text
        if answer.headers.get("Content-Type") == "application/json":
            assert json.loads(answer.content)["Message"]


def _assert_still_serving(endpoint: Endpoint) -> None:
    assert requests.get(f"{endpoint.url}/ping", timeout=TIMEOUT_S).status_code == 200
    answer = _invoke(
        endpoint,
        f"/endpoints/{NAME}/invocations",
        {"X-Amzn-SageMaker-Target-Model": TARGET},
        b"[1]",
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"length": 3}


target_models = st.one_of(
    # What a header can carry: no control characters, no surrounding whitespace.
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=300)
    .map(str.strip)
    .filter(bool),
    st.lists(
        st.sampled_from(["..", ".", "", "echo.tar.gz", "sub", "%2e%2e", "\\"]),
        min_size=1,
        max_size=8,
    ).map("/".join),
)


def _as_text(content_type: bytes | str) -> bool:
    """Whether the model gets a body of this type as text (JSON and CSV), not bytes."""
    raw = content_type.encode("utf-8") if isinstance(content_type, str) else content_type
    return raw.split(b";")[0].strip().lower() in (b"application/json", b"text/csv")


def _undecodable(body: bytes, content_type: bytes | str) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return _as_text(content_type)
    return False


def _length_seen(body: bytes, content_type: bytes | str) -> int:
    """The length the model measures: characters of a text body, bytes of another."""
    return len(body.decode("utf-8")) if _as_text(content_type) else len(body)


@FEW
@given(target=target_models, body=bodies, content_type=content_types)
@example(target=TARGET, body=b"\x80", content_type=b"application/json")
@example(target=TARGET, body=b"\xc2\x80", content_type=b"application/json")  # 1 character
@example(target="../outside.tar.gz", body=b"[1]", content_type=b"application/json")
@example(target="/etc/passwd", body=b"", content_type=b"")
@example(target="./echo.tar.gz", body=b"[1]", content_type=b"application/json")
@example(target="x" * 1025, body=b"[1]", content_type=b"application/json")
def test_any_target_model_is_served_or_refused_with_a_4xx(
    endpoint: Endpoint, target: str, body: bytes, content_type: bytes
) -> None:
    headers = {
        "X-Amzn-SageMaker-Target-Model": target.encode("utf-8"),
        "Content-Type": content_type,
    }

    answer = _invoke(endpoint, f"/endpoints/{NAME}/invocations", headers, body)

    _assert_answered_cleanly(answer)
    if target == TARGET and _undecodable(body, content_type):
        # JSON and CSV reach the model as text: bytes that are not UTF-8 are the client's
        # fault (400), which the endpoint passes on as a ModelError.
        assert answer.status_code == 424, answer.text
        assert answer.json()["OriginalStatusCode"] == 400
    elif target == TARGET:
        assert answer.status_code == 200
        assert answer.json() == {"length": _length_seen(body, content_type)}
    else:
        assert answer.status_code == 400
        assert answer.headers["x-amzn-ErrorType"] == "ValidationError"
    _assert_still_serving(endpoint)


@FEW
@given(
    name=st.text(min_size=1, max_size=120),
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    suffix=st.sampled_from(["/invocations", "", "/invocations/x", "/../ping"]),
)
@example(name=NAME, method="GET", suffix="/invocations")
@example(name="a" * 64, method="POST", suffix="/invocations")
def test_odd_endpoint_names_methods_and_paths_are_4xx(
    endpoint: Endpoint, name: str, method: str, suffix: str
) -> None:
    url = f"{endpoint.url}/endpoints/{quote(name, safe='')}{suffix}"

    answer = requests.request(
        method,
        url,
        data=b"[1]",
        timeout=TIMEOUT_S,
        headers={"X-Amzn-SageMaker-Target-Model": TARGET},
    )

    _assert_answered_cleanly(answer)
    assert answer.status_code in (400, 404), (answer.status_code, answer.text[:200])
    _assert_still_serving(endpoint)


@FEW
@given(
    attributes=header_values(max_size=4000),
    accept=header_values(max_size=200),
    repeat=st.integers(min_value=1, max_value=40),
)
def test_huge_and_unicode_headers_reach_the_model_or_are_refused(
    endpoint: Endpoint, attributes: bytes, accept: bytes, repeat: int
) -> None:
    headers: dict[str, bytes | str] = {
        "X-Amzn-SageMaker-Target-Model": TARGET,
        "Accept": accept,
        "X-Amzn-SageMaker-Custom-Attributes": attributes * repeat,
        "Content-Type": "application/json",
    }

    answer = _invoke(endpoint, f"/endpoints/{NAME}/invocations", headers, b"[1, 2]")

    _assert_answered_cleanly(answer)
    _assert_still_serving(endpoint)
