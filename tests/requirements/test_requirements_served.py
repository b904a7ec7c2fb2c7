"""Per-model requirements through a real `mme serve`: LOAD installs, INVOKE imports.

Two workers per model, so that every LOAD has two workers that want the same install
at once (the lock makes one wait for the other's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.models import make_model_dir
from harness.servers import NativeServer
from tests.container.test_container_api import invoke, listed, load
from tests.requirements.wheels import PACKAGE, ship_requirements

pytestmark = pytest.mark.server

TIMEOUT = 120
REPORTS_ITS_PACKAGE = f"""
    import json
    import {PACKAGE}
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        answer = {{"version": {PACKAGE}.VERSION, "file": {PACKAGE}.__file__}}
        return json.dumps(answer), "application/json"
"""


@pytest.fixture(scope="module")
def deps_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MME_REQUIREMENTS_DIR of the server."""
    return tmp_path_factory.mktemp("deps")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, deps_root: Path) -> Iterator[NativeServer]:
    """One server with two workers per model, its requirements in ``deps_root``."""
    env = {
        "MME_REQUIREMENTS_DIR": str(deps_root),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "90",
        "MME_NUM_THREADS": "1",
    }
    instance = NativeServer(tmp_path_factory.mktemp("models"), env=env).start()
    try:
        yield instance
    finally:
        instance.stop()


def model_with_requirements(
    server: NativeServer, name: str, requirements: str, versions: tuple[str, ...]
) -> str:
    model_dir = make_model_dir(
        server.models_root, name, {"inference.py": REPORTS_ITS_PACKAGE}, weights=False
    )
    ship_requirements(model_dir, requirements, versions)
    return name


def loaded_with(server: NativeServer, name: str, version: str) -> str:
    """A model that needs ``PACKAGE==version``, shipped in its code/lib, LOADed (200)."""
    model_with_requirements(server, name, f"{PACKAGE}=={version}\n", (version,))
    answer = load(server, name)
    assert answer.status_code == 200, answer.text
    return name


def reported(server: NativeServer, name: str) -> dict[str, str]:
    answer = invoke(server, name, b"{}")
    assert answer.status_code == 200, answer.text
    body: dict[str, str] = answer.json()
    return body


def test_each_model_imports_its_own_version_from_its_own_folder(
    server: NativeServer, deps_root: Path
) -> None:
    one = reported(server, loaded_with(server, "dep-one", "1.0"))
    two = reported(server, loaded_with(server, "dep-two", "2.0"))
    assert (one["version"], two["version"]) == ("1.0", "2.0")
    folders = {Path(answer["file"]).parents[1] for answer in (one, two)}
    assert len(folders) == 2
    assert all(folder.parent == deps_root for folder in folders)
    assert reported(server, "dep-one")["version"] == "1.0"  # no cross-talk after dep-two


def test_identical_requirements_share_a_folder_and_a_reload_reuses_it(
    server: NativeServer,
) -> None:
    first = reported(server, loaded_with(server, "dep-first", "1.5"))
    folder = Path(first["file"]).parents[1]
    inode = folder.stat().st_ino
    twin = reported(server, loaded_with(server, "dep-twin", "1.5"))
    assert twin["file"] == first["file"]
    assert requests.delete(f"{server.url}/models/dep-first", timeout=TIMEOUT).status_code == 200
    assert reported(server, loaded_with(server, "dep-first", "1.5")) == first
    assert folder.stat().st_ino == inode  # never installed again: a new install is a new inode


def test_a_broken_requirement_fails_only_that_load_and_says_why_in_the_log(
    server: NativeServer,
) -> None:
    bystander = loaded_with(server, "dep-bystander", "3.0")
    model_with_requirements(server, "dep-broken", "mme-no-such-package==9.9\n", ("1.0",))
    answer = load(server, "dep-broken")
    assert answer.status_code == 500  # MMS's "Failed to start workers" for any load error
    assert "dep-broken" not in listed(server)
    log = server.log()
    assert "code/requirements.txt failed to install (pip exited with 1)" in log
    assert "No matching distribution found for mme-no-such-package==9.9" in log
    assert reported(server, bystander)["version"] == "3.0"
    assert requests.get(f"{server.url}/ping", timeout=TIMEOUT).json()["status"] == "Healthy"
    assert bystander in listed(server)


def test_the_global_environment_never_gets_the_package(server: NativeServer) -> None:
    loaded_with(server, "dep-global", "4.0")
    fresh = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert fresh.returncode != 0 and "ModuleNotFoundError" in fresh.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "show", PACKAGE],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert shown.returncode != 0
