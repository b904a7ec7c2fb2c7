"""What only the built image can show: labels, the entrypoint, signals, the user.

Run with ``pytest tests/container --target image`` after ``scripts/ci_image.sh`` (``make
test-image`` does both); with the native target they are not collected.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from harness.models import expected_linear, make_model_dir
from harness.servers import READY_LINE, wait_for_log
from tests.container.image_target import (
    CONTAINER_MODELS,
    ImageServer,
    engine,
    image_config,
    image_labels,
    run_command,
)

pytestmark = pytest.mark.image
TIMEOUT = 120
SAGEMAKER_KILL_AFTER_S = 30  # SageMaker sends SIGKILL this long after SIGTERM
NON_ROOT_USER = "mme"


@pytest.fixture
def started() -> Iterator[list[ImageServer]]:
    """Servers a test starts; any still running at the end are removed."""
    servers: list[ImageServer] = []
    yield servers
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.remove()


def _start(started: list[ImageServer], root: Path, **kwargs: object) -> ImageServer:
    server = ImageServer(root, **kwargs)  # type: ignore[arg-type]
    started.append(server)
    return server.start()


def _world_readable(root: Path) -> None:
    """Let any user in the container read ``root`` (pytest makes its temp folders 0700)."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_sagemaker_labels_are_set() -> None:
    labels = image_labels()
    assert labels.get("com.amazonaws.sagemaker.capabilities.multi-models") == "true"
    assert labels.get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true"


def test_entrypoint_is_exec_form_and_serve_is_the_default() -> None:
    config = image_config()
    assert config["Entrypoint"] == ["/opt/mme/venv/bin/python", "/opt/mme/entrypoint.py"]
    assert config["Cmd"] == ["serve"]


def test_a_command_runs_and_its_exit_code_comes_back() -> None:
    assert run_command(["python", "-c", "import sys; sys.exit(3)"]).returncode == 3
    printed = run_command(["mme", "--version"])
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("mme ")
    missing = run_command(["no-such-command"])
    assert missing.returncode == 127
    assert "no-such-command: command not found" in missing.stderr


def test_torch_and_java_versions_match_the_pins() -> None:
    found = run_command(
        [
            "python",
            "-c",
            "import torch, torchvision; print(torch.__version__, torchvision.__version__)",
        ]
    )
    assert found.returncode == 0, found.stderr
    torch_version, vision_version = found.stdout.split()
    assert torch_version.split("+")[0] == "2.14.1"
    assert vision_version.split("+")[0] == "0.29.1"
    java = run_command(["java", "-version"])
    assert java.returncode == 0 and 'version "17.' in java.stderr


def test_sigterm_stops_the_server_cleanly_within_30_s(
    started: list[ImageServer], tmp_path: Path
) -> None:
    server = _start(started, tmp_path / "models")
    assert server.descendants(), "no Java or worker process under `mme serve`"
    assert server.stop(timeout_s=SAGEMAKER_KILL_AFTER_S) == 0, server.log()
    assert server.stop_seconds is not None and server.stop_seconds < SAGEMAKER_KILL_AFTER_S
    assert "stopping the model server" in server.log()
    gone = engine("container", "exists", server.name, check=False)
    assert gone.returncode != 0, "the container is still there after it stopped"


def test_bind_to_port_is_honoured(started: list[ImageServer], tmp_path: Path) -> None:
    server = _start(started, tmp_path / "models")
    assert server.port != 8080
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert f"port {server.port}" in server.log()
    listening = {
        conn.laddr.port
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN
    }
    assert server.port in listening
    assert server.stop() == 0


def test_the_container_exits_when_the_server_dies(
    started: list[ImageServer], tmp_path: Path
) -> None:
    """No ``tail -f /dev/null``: the entrypoint blocks on the server and returns its status."""
    server = _start(started, tmp_path / "models")
    # MMS answers /ping before `mme serve` is ready (it also waits for the prefork zygote):
    # kill Java only once the server has said it is up, so that this is a crash, not a start.
    wait_for_log(server, READY_LINE, TIMEOUT, interval_s=0.2)
    java = [p for p in server.descendants() if p.name() == "java"]
    assert java, [p.name() for p in server.descendants()]
    java[0].kill()
    assert server.process is not None
    code = server.process.wait(timeout=60)
    assert code != 0, server.log()
    assert "MMS exited unexpectedly" in server.log()


def test_a_failed_start_is_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    # With no Java where JAVA_HOME points, MMS exits before /ping ever answers.
    server = ImageServer(
        tmp_path / "models", env={"JAVA_HOME": "/nonexistent", "MME_START_ATTEMPTS": "2"}
    )
    code = server.launch().wait(timeout=180)
    assert code == 1, server.log()
    assert server.log().count("before it answered /ping") == 2
    assert "trying again in" in server.log()
    assert "giving up after 2 attempt(s)" in server.log()


def test_a_configuration_error_is_not_retried(tmp_path: Path) -> None:
    started_at = time.monotonic()
    result = run_command(["serve"], env={"SAGEMAKER_BIND_TO_PORT": "99999"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SAGEMAKER_BIND_TO_PORT" in result.stderr
    assert "trying again" not in result.stderr
    assert time.monotonic() - started_at < 60


def test_the_default_user_is_root_as_sagemaker_expects() -> None:
    assert image_config().get("User") in ("0", "root", "0:0")
    assert run_command(["id", "-u"]).stdout.strip() == "0"


def test_the_image_also_serves_as_a_non_root_user(
    started: list[ImageServer], tmp_path: Path
) -> None:
    uid = run_command(["id", "-u"], user=NON_ROOT_USER).stdout.strip()
    assert uid.isdigit() and uid != "0"
    writable = run_command(["test", "-w", CONTAINER_MODELS], user=NON_ROOT_USER)
    assert writable.returncode == 0, f"{CONTAINER_MODELS} is not writable by {NON_ROOT_USER}"

    root = tmp_path / "models"
    make_model_dir(root, "linear")
    _world_readable(root)
    server = _start(started, root, user=NON_ROOT_USER)
    loaded = requests.post(
        f"{server.url}/models",
        timeout=TIMEOUT,
        json={"model_name": "linear", "url": server.model_url("linear")},
    )
    assert loaded.status_code == 200, loaded.text
    answer = requests.post(
        f"{server.url}/models/linear/invoke",
        data=b"[[1, 2, 3]]",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected_linear([[1, 2, 3]])
    uids = {p.uids().real for p in server.descendants()}
    assert uids == {int(uid)}, uids
    assert server.stop() == 0
