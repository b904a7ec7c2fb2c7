"""Property-based tests: bad input at the container API of a running `mme serve`.

Each property sends what hypothesis draws, checks the answer, and the server must
answer /ping afterwards. A 5xx is allowed only where a model's own code raised.
"""

from __future__ import annotations

import json
import os
import string
import unicodedata
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.models import make_model_dir
from harness.servers import NativeServer
from tests.container.test_container_api import TIMEOUT, listed
from tests.faults.conftest import running_server

pytestmark = pytest.mark.server

PAYLOAD_MB = 1
ECHO = """
    import json
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        return json.dumps({"length": len(data), "type": content_type}), "application/json"
"""
KNOWN_TYPES = [
    "application/json",
    "text/csv",
    "application/x-npy",
    "text/plain",
    "application/x-image",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
    "*/*",
    "",
]

# Few examples (two shared cores), each bounded by a deadline well above a normal answer.
FEW = settings(
    max_examples=25,
    deadline=timedelta(seconds=30),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Every LOAD starts processes: fewer still.
FEWER = settings(FEW, max_examples=12)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """A server with a model that echoes (never raises) and the default linear model."""
    root = tmp_path_factory.mktemp("models")
    make_model_dir(root, "echo", {"inference.py": ECHO}, weights=False)
    make_model_dir(root, "linear")
    with running_server(root, 30) as instance:
        for name in ("echo", "linear"):
            answer = requests.post(
                f"{instance.url}/models",
                timeout=TIMEOUT,
                json={"model_name": name, "url": instance.model_url(name)},
            )
            assert answer.status_code == 200, answer.text
        yield instance


def header_values(max_size: int = 200) -> st.SearchStrategy[bytes]:
    """Any unicode a header can carry on the wire (UTF-8), without line breaks or NULs."""
    text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=max_size)
    return text.map(lambda value: value.strip().encode("utf-8"))


content_types = st.one_of(st.sampled_from(KNOWN_TYPES), header_values(80))
bodies = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=1024).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def assert_clean_error(answer: requests.Response) -> None:
    """An error answer is short JSON that says what went wrong, without a stack trace."""
    if answer.status_code >= 400:
        message = answer.json()["message"]
        assert message and "Traceback" not in message


def assert_healthy(server: NativeServer) -> None:
    answer = requests.get(f"{server.url}/ping", timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.json()["status"] == "Healthy"


def post(server: NativeServer, path: str, body: bytes, headers: dict[str, Any]) -> Any:
    return requests.post(f"{server.url}{path}", data=body, headers=headers, timeout=TIMEOUT)


@FEW
@given(body=bodies, content_type=content_types, accept=st.one_of(st.none(), header_values(80)))
def test_any_body_and_content_type_to_a_model_that_never_raises_is_never_5xx(
    server: NativeServer, body: bytes, content_type: bytes, accept: bytes | None
) -> None:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept is not None else {})}
    answer = post(server, "/models/echo/invoke", body, headers)
    assert answer.status_code in (200, 400), answer.text  # 400: undecodable or form bodies
    assert_clean_error(answer)
    assert_healthy(server)


def json_like(data: st.DataObject) -> bytes:
    """Valid JSON (often arrays of numbers), then maybe cut short or with a byte changed."""
    numbers = st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=False, width=32))
    rows = st.lists(st.lists(numbers, min_size=0, max_size=4), max_size=3)
    value = data.draw(
        st.one_of(
            rows,
            st.recursive(
                st.none() | st.booleans() | numbers | st.text(max_size=8),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                ),
                max_leaves=8,
            ),
        )
    )
    text = json.dumps(value).encode()
    cut = data.draw(st.integers(0, len(text)))
    mutation = data.draw(st.sampled_from(["none", "truncate", "replace"]))
    if mutation == "truncate":
        return text[:cut]
    if mutation == "replace" and text:
        return (
            text[:cut]
            + data.draw(st.sampled_from(list(b'[]{},:"\\x\xff'))).to_bytes(1, "big")
            + text[cut + 1 :]
        )
    return text


def decodes_to_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@FEW
@given(data=st.data())
def test_malformed_json_to_the_default_handlers_is_400_never_a_crash(
    server: NativeServer, data: st.DataObject
) -> None:
    body = json_like(data)
    answer = post(server, "/models/linear/invoke", body, {"Content-Type": "application/json"})
    if answer.status_code == 500:  # only where the model ran: JSON of numbers, wrong shape
        assert decodes_to_json(body), (body, answer.text)
    else:
        assert answer.status_code in (200, 400), (body, answer.text)
    assert_clean_error(answer)
    assert_healthy(server)


@FEW
@given(size=st.integers(0, 64 * 1024), count=st.integers(1, 300))
def test_huge_and_many_headers_are_refused_cleanly(
    server: NativeServer, size: int, count: int
) -> None:
    headers = {f"X-Filler-{i}": "v" * (size // count) for i in range(count)}
    answer = post(
        server, "/models/echo/invoke", b"{}", {"Content-Type": "application/json", **headers}
    )
    assert answer.status_code in (200, 400, 413, 431), answer.text
    assert_healthy(server)


# A name that could never be reached again under /models/<name>, or that breaks MMS's
# bookkeeping (NUL, control characters, lone surrogates, which a client can only send
# escaped in JSON): the gateway refuses it with 400 before MMS sees it.
def refused(name: str) -> bool:
    return (
        not name
        or "/" in name
        or name in (".", "..")
        or any(unicodedata.category(char) in ("Cc", "Cs") for char in name)
    )


names = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        ["../x", "..", ".", "a/b", "a b", "é名", "x" * 1000, "%2e%2e", "a?b#c", "nul\x00", "\ud800"]
    ),
    st.text(string.ascii_letters + "./ ", max_size=12),
)


@FEWER
@given(name=names)
@example(name="../x").via("a name that escapes")
@example(name="a/b").via("a name with a slash")
@example(name="..").via("a dot-dot name")
@example(name="é名 x").via("unicode and a space")
@example(name="x" * 1000).via("a long name")
@example(name="\x00").via("NUL")
@example(name="\udc80").via("a lone surrogate")
def test_odd_model_names_load_and_unload_or_are_refused(server: NativeServer, name: str) -> None:
    answer = requests.post(
        f"{server.url}/models",
        timeout=TIMEOUT,
        json={"model_name": name, "url": server.model_url("echo")},
    )
    if refused(name):
        assert answer.status_code == 400, answer.text
        assert_clean_error(answer)
    elif name in ("echo", "linear"):
        assert answer.status_code == 409, answer.text
    else:
        assert answer.status_code == 200, answer.text
        quoted = quote(name, safe="")
        invoked = post(
            server, f"/models/{quoted}/invoke", b"{}", {"Content-Type": "application/json"}
        )
        assert invoked.status_code == 200, invoked.text
        assert requests.delete(f"{server.url}/models/{quoted}", timeout=TIMEOUT).status_code == 200
    # Nothing is left registered, at once: not even for the moment MMS used to take.
    assert name in ("echo", "linear") or name not in listed(server)
    assert_healthy(server)


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@FEW
@given(
    body=st.one_of(
        st.binary(max_size=512),
        st.text(max_size=200).map(str.encode),
        st.dictionaries(
            st.sampled_from(["model_name", "url", "x"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=20)),
            max_size=3,
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_bad_load_bodies_register_nothing(server: NativeServer, body: bytes) -> None:
    before = set(listed(server))
    answer = post(server, "/models", body, {"Content-Type": "application/json"})
    request = json_object(body)
    name = request.get("model_name") if request else None
    url = request.get("url") if request else None
    if (
        not isinstance(name, str)
        or not isinstance(url, str)
        or not os.path.isabs(url)
        or refused(name)
    ):
        assert answer.status_code == 400, answer.text  # the gateway says what is wrong
    elif answer.status_code >= 500:
        # A folder that holds no model: the default model_fn fails ("Failed to start
        # workers" with the reason). Nothing else may be a 5xx.
        assert os.path.isdir(url), answer.text
    else:
        assert 400 <= answer.status_code < 500, answer.text  # 404: no such folder
    assert_clean_error(answer)
    assert set(listed(server)) == before
    assert_healthy(server)
