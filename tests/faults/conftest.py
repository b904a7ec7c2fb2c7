"""Model code and servers shared by the fault tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.models import make_model_dir
from harness.servers import NativeServer
from tests.container.test_container_api import load

# Sleeps as many seconds as the body says, then answers with the worker's pid.
SLEEPY = """
    import json, os, time
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        time.sleep(float(data or 0))
        return json.dumps({"pid": os.getpid()}), "application/json"
"""


@contextmanager
def running_server(models_root: Path, timeout_s: int) -> Iterator[NativeServer]:
    """A server whose workers get ``timeout_s`` to answer; stopped afterwards."""
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": str(timeout_s), "MME_NUM_THREADS": "1"}
    server = NativeServer(models_root, env=env).start()
    try:
        yield server
    finally:
        server.stop()


def loaded_model(server: NativeServer, name: str, source: str = SLEEPY) -> Path:
    """``name`` with ``inference.py`` = ``source``, LOADed (the test fails unless 200)."""
    model_dir = make_model_dir(server.models_root, name, {"inference.py": source}, weights=False)
    answer = load(server, name)
    assert answer.status_code == 200, answer.text
    return model_dir


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    """A fresh models folder for the test's own server."""
    root = tmp_path / "models"
    root.mkdir()
    return root
