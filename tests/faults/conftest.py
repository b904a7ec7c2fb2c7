"""Model code and servers shared by the fault tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.models import make_model_dir
from harness.servers import NativeServer
from tests.container.test_container_api import load

# Sleeps as many seconds as the body says, then answers with the worker's pid. While it
# sleeps, a file in its model folder says which worker it is (see ``sleeping``).
SLEEPY = """
    import json, os, time
    def model_fn(model_dir):
        return model_dir
    def transform_fn(model_dir, data, content_type, accept):
        marker = os.path.join(model_dir, f"sleeping-{os.getpid()}")
        open(marker, "w").close()
        try:
            time.sleep(float(data or 0))
        finally:
            os.remove(marker)
        return json.dumps({"pid": os.getpid()}), "application/json"
"""


def sleeping(model_dirs: Iterable[Path]) -> list[int]:
    """The pids of the workers in a request of these SLEEPY models now."""
    return sorted(
        int(marker.name.split("-")[1])
        for model_dir in model_dirs
        for marker in model_dir.glob("sleeping-*")
    )


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
