"""A real `mme serve` process for tests: started on a free port, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from mme.ports import free_port


def wait_for_ping(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Poll ``url/ping`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before /ping answered")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}/ping did not answer within {timeout_s} s")


class NativeServer:
    """`mme serve` run on this machine; models live under ``models_root/<name>/model``."""

    def __init__(self, models_root: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None, log_path: Path | None = None) -> None:
        self.models_root = models_root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(self.port), **(env or {})}
        self.args = args or []
        self.log_path = log_path or models_root.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def model_url(self, name: str) -> str:
        """The ``url`` of a LOAD request for the model folder ``models_root/<name>/model``."""
        return str(self.models_root / name / "model")

    def start(self, timeout_s: float = 120) -> NativeServer:
        """Start the server and wait until ``/ping`` answers."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mme.cli", "serve", *self.args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_ping(self.url, self.process, timeout_s)
        return self

    def descendants(self) -> list[psutil.Process]:
        """Every live process started under the server (Java, workers)."""
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_alive(self, worker_id: str) -> bool:
        """Whether a Python worker of the server, by MMS's worker id (``9000-ab12``), runs."""
        socket_suffix = f".mms.sock.{worker_id.split('-')[0]}"
        return any(
            any(arg.endswith(socket_suffix) for arg in process.cmdline())
            for process in self.descendants()
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        )

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM the server and return its exit code (SIGKILL after ``timeout_s``)."""
        assert self.process is not None
        return terminate(self.process, timeout_s)


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM ``process`` unless it ended; SIGKILL it after ``timeout_s``; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
