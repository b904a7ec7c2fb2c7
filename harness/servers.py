"""Real servers as child processes: started on a free port of 127.0.0.1, ready once ``/ping``
answers, stopped with SIGTERM (SIGKILL after a grace)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import psutil
import requests

from harness.polling import wait_until
from harness.processes import cmdline, descendants, runs_worker
from mme.ports import free_port

# `mme serve` logs it once /ping answers and workers can start (in prefork mode: once the
# zygote is ready, which may be after /ping answered).
READY_LINE = "the model server is healthy on"


def wait_for_ping(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Poll ``url/ping`` until it answers 200; fail early if ``process`` exits."""

    def answered() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before /ping answered")
        try:
            return requests.get(f"{url}/ping", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    if not wait_until(answered, timeout_s):
        raise TimeoutError(f"{url}/ping did not answer within {timeout_s} s")


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


class Logging(Protocol):
    """A server whose output can be read (ServerProcess, the image's server)."""

    def log(self) -> str:
        """What the server printed so far."""


def wait_for_log(server: Logging, line: str, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Whether ``line`` shows in the server's log within ``timeout_s``."""
    return wait_until(lambda: line in server.log(), timeout_s, interval_s)


class ServerProcess:
    """``python -m mme.cli ARGS`` (behind ``wrapper``, a command that execs it: ``unshare ...``)
    as a child that answers ``/ping`` on ``port``; its output goes to ``log_path``."""

    START_TIMEOUT_S = 180.0
    STOP_TIMEOUT_S = 40.0

    def __init__(
        self, args: list[str], port: int, log_path: Path, wrapper: tuple[str, ...] = ()
    ) -> None:
        self.args = args
        self.wrapper = wrapper
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env: Mapping[str, str] | None = None  # None: this process's environment
        self.cwd: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [*self.wrapper, sys.executable, "-m", "mme.cli", *self.args]

    def start(
        self, env: Mapping[str, str] | None = None, timeout_s: float | None = None
    ) -> ServerProcess:
        """Start it with ``env`` (None: ``self.env``) and wait until ``/ping`` answers; a
        server that does not answer in time is stopped."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env if env is None else env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
            )
        try:
            wait_for_ping(self.url, self.process, timeout_s or self.START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """Every live process started under the server."""
        return [] if self.process is None else descendants(self.process.pid)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code (None: never started)."""
        if self.process is None:
            return None
        return terminate(self.process, timeout_s or self.STOP_TIMEOUT_S)


class NativeServer(ServerProcess):
    """`mme serve ARGS` run on this machine, with this environment and ``env`` on top;
    models live under ``models_root/<name>/model``."""

    START_TIMEOUT_S = 120.0
    STOP_TIMEOUT_S = 30.0

    def __init__(
        self,
        models_root: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        port = free_port()
        super().__init__(
            ["serve", *(args or [])], port, log_path or models_root.parent / f"serve-{port}.log"
        )
        self.models_root = models_root
        self.env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), **(env or {})}

    def start(
        self, env: Mapping[str, str] | None = None, timeout_s: float | None = None
    ) -> NativeServer:
        """Start the server and wait until ``/ping`` answers."""
        super().start(env, timeout_s)
        return self

    def model_url(self, name: str) -> str:
        """The ``url`` of a LOAD request for the model folder ``models_root/<name>/model``."""
        return str(self.models_root / name / "model")

    def temp_dir(self) -> Path:
        """The server's private folder (MMS's ``java.io.tmpdir``): the workers' records,
        MMS's sockets and log pipes."""
        return next(
            Path(arg.split("=", 1)[1])
            for process in self.descendants()
            for arg in cmdline(process)
            if arg.startswith("-Djava.io.tmpdir=")
        )

    def worker_alive(self, worker_id: str) -> bool:
        """Whether a Python worker of the server, by MMS's worker id (``9000-ab12``), runs."""
        return runs_worker(self.descendants(), worker_id)

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM the server and return its exit code (SIGKILL after ``timeout_s``)."""
        code = super().stop(timeout_s)
        assert code is not None, "the server was never started"
        return code
