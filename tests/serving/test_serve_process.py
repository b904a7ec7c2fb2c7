"""`mme serve` as a process: start-up errors, SIGTERM, two servers, custom handler styles."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from harness.models import expected_linear, make_model_dir
from harness.servers import NativeServer
from mme.ports import free_port

TIMEOUT = 120


def load_and_invoke(
    server: NativeServer, name: str, body: bytes = b"[[1, 2, 3]]"
) -> requests.Response:
    loaded = requests.post(
        f"{server.url}/models",
        timeout=TIMEOUT,
        json={"model_name": name, "url": server.model_url(name)},
    )
    assert loaded.status_code == 200, loaded.text
    return requests.post(
        f"{server.url}/models/{name}/invoke",
        data=body,
        timeout=TIMEOUT,
        headers={"Content-Type": "application/json"},
    )


def run_serve(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mme.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SAGEMAKER_BIND_TO_PORT", "65536"), ("SAGEMAKER_MODEL_SERVER_WORKERS", "many")],
)
def test_bad_settings_fail_fast_naming_the_variable(variable: str, value: str) -> None:
    started = time.monotonic()
    result = run_serve({**_base_env(), variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # nothing was started


def test_a_port_in_use_is_a_clear_failure(tmp_path: Path) -> None:
    with socket.socket() as busy:
        port = free_port()
        busy.bind(("0.0.0.0", port))
        busy.listen()
        result = run_serve({**_base_env(), "SAGEMAKER_BIND_TO_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} is in use (SAGEMAKER_BIND_TO_PORT)" in result.stdout
    assert _orphans() == []


def test_sigterm_stops_everything_within_30_s(tmp_path: Path) -> None:
    server = NativeServer(tmp_path / "models").start()
    make_model_dir(server.models_root, "m")
    assert load_and_invoke(server, "m").status_code == 200
    family = server.descendants()
    assert any("java" in p.name() for p in family)
    assert len(family) >= 3  # launcher, Java, at least one worker
    started = time.monotonic()
    assert server.stop(timeout_s=30) == 0
    assert time.monotonic() - started < 30
    psutil.wait_procs(family, timeout=5)
    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    log = server.log()
    assert "model server stopped" in log
    assert '"POST /models HTTP/1.1" 200' in log  # the access log works...
    assert "GET /ping" not in log  # ...but health checks, every few seconds, stay out of it


def test_natively_the_server_listens_on_loopback_only(tmp_path: Path) -> None:
    # Its management API loads any folder it is told to: not for the network to reach.
    server = NativeServer(tmp_path / "models").start()
    try:
        assert server.process is not None
        family = [psutil.Process(server.process.pid), *server.descendants()]
        listening = [
            c.laddr for p in family for c in _connections(p) if c.status == psutil.CONN_LISTEN
        ]
        assert server.port in {address.port for address in listening}
        assert all(_loopback(address.ip) for address in listening), listening
    finally:
        server.stop()


def test_a_killed_server_leaves_nothing_running(tmp_path: Path) -> None:
    server = NativeServer(tmp_path / "models").start()
    make_model_dir(server.models_root, "m")
    assert load_and_invoke(server, "m").status_code == 200
    family = server.descendants()
    assert len(family) >= 4  # Java, the zygote, a launcher and its worker
    assert server.process is not None
    server.process.kill()  # SIGKILL: no clean-up of its own
    server.process.wait()
    _, alive = psutil.wait_procs(family, timeout=15)
    assert [p.cmdline() for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def test_two_servers_side_by_side_do_not_interfere(tmp_path: Path) -> None:
    first = NativeServer(tmp_path / "models").start()
    second = NativeServer(tmp_path / "models").start()
    try:
        make_model_dir(first.models_root, "shared-name")
        assert load_and_invoke(first, "shared-name").status_code == 200
        assert load_and_invoke(second, "shared-name").status_code == 200
        assert second.stop() == 0
        answer = requests.post(
            f"{first.url}/models/shared-name/invoke",
            data=b"[[1, 2, 3]]",
            headers={"Content-Type": "application/json"},
            timeout=TIMEOUT,
        )
        assert answer.json() == expected_linear([[1, 2, 3]])
    finally:
        first.stop()
        second.stop()


FUNCTION_HANDLER = """
    import json
    _model = {}
    def handle(data, context):
        if data is None:
            _model["dir"] = context.system_properties["model_dir"]
            return None
        return [json.dumps({"style": "function", "bytes": len(row["body"])}) for row in data]
"""

CLASS_HANDLER = """
    import json
    class ModelHandler:
        def initialize(self, context):
            self.name = context.model_name
        def preprocess(self, batch):
            return [len(row["body"]) for row in batch]
        def inference(self, sizes):
            return sizes
        def postprocess(self, sizes):
            return [json.dumps({"style": "class", "model": self.name, "bytes": n}) for n in sizes]
        def handle(self, data, context):
            return self.postprocess(self.inference(self.preprocess(data)))
"""


@pytest.mark.parametrize(
    ("source", "spec_suffix", "how", "expected"),
    [
        (FUNCTION_HANDLER, ":handle", "option", {"style": "function", "bytes": 11}),
        (CLASS_HANDLER, "", "env", {"style": "class", "model": "custom", "bytes": 11}),
    ],
)
def test_an_mms_custom_service_replaces_ours(
    tmp_path: Path, source: str, spec_suffix: str, how: str, expected: dict[str, object]
) -> None:
    handler_file = tmp_path / "handlers" / "model_handler.py"
    handler_file.parent.mkdir()
    handler_file.write_text(textwrap.dedent(source))
    spec = f"{handler_file}{spec_suffix}"
    server = NativeServer(
        tmp_path / "models",
        args=["--handler", spec] if how == "option" else [],
        env={"SAGEMAKER_HANDLER": spec} if how == "env" else {},
    ).start()
    try:
        make_model_dir(server.models_root, "custom")
        answer = load_and_invoke(server, "custom")
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected
    finally:
        server.stop()


def test_a_missing_handler_file_is_a_clear_failure(tmp_path: Path) -> None:
    result = run_serve(
        {
            **_base_env(),
            "SAGEMAKER_BIND_TO_PORT": str(free_port()),
            "SAGEMAKER_HANDLER": str(tmp_path / "nope.py:handle"),
        }
    )
    assert result.returncode == 1
    assert "handler service file not found" in result.stdout


def _connections(process: psutil.Process) -> list[Any]:
    try:
        return list(process.net_connections("inet"))
    except psutil.Error:  # MMS's metrics collector comes and goes every minute
        return []


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # Java binds ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}


def _orphans() -> list[int]:
    """Live MMS processes whose server's private temp folder is gone (their server stopped)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        args = process.info["cmdline"] or []
        private = [Path(*Path(a).parts[:3]) for a in args if a.startswith("/tmp/mme-")]
        if private and not private[0].exists():
            found.append(process.pid)
    return found
