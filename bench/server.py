"""One model server under test, driven over loopback HTTP: `mme serve` or the stock stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import psutil
import requests

from harness.processes import cmdline, model_name, model_processes
from harness.servers import READY_LINE, NativeServer, wait_for_log

TIMEOUT_S = 300


class ServerProcess(Protocol):
    """What BenchServer needs of a server's process (NativeServer has it)."""

    url: str

    def start(self, *, timeout_s: float) -> object:
        """Start the server; return once ``/ping`` answers."""

    def stop(self) -> int:
        """Stop the server and everything it started; its exit code."""

    def log(self) -> str:
        """What the server printed so far."""

    def descendants(self) -> list[psutil.Process]:
        """Every live process started under the server."""


class BenchServer:
    """A server under test; times its start and each request.

    ``ready_line``: what the server logs once it is ready after ``/ping`` (None: ``/ping``
    is enough).
    """

    def __init__(self, mode: str, process: ServerProcess, ready_line: str | None) -> None:
        self.mode = mode
        self.native = process
        self.ready_line = ready_line
        self.session = requests.Session()

    @property
    def url(self) -> str:
        """The server's base URL on 127.0.0.1."""
        return self.native.url

    def start(self) -> dict[str, float]:
        """Start; seconds to MMS's /ping and to the server reporting itself ready."""
        started = time.monotonic()
        self.native.start(timeout_s=TIMEOUT_S)
        ping_s = time.monotonic() - started
        if self.ready_line is not None and not wait_for_log(
            self.native, self.ready_line, started + TIMEOUT_S - time.monotonic(), interval_s=0.02
        ):
            raise TimeoutError(f"{self.mode} server never logged {self.ready_line!r}")
        return {"ping_s": ping_s, "ready_s": time.monotonic() - started}

    def stop(self) -> None:
        """Stop the server (it stops everything it started)."""
        self.session.close()
        self.native.stop()

    def load(self, name: str, url: Path) -> float:
        """LOAD ``url`` as ``name``; the seconds the LOAD took (it must succeed)."""
        started = time.monotonic()
        answer = self.session.post(
            f"{self.url}/models", json={"model_name": name, "url": str(url)}, timeout=TIMEOUT_S
        )
        elapsed = time.monotonic() - started
        if answer.status_code != 200:
            raise RuntimeError(f"LOAD of {name} ({self.mode}) failed: {answer.text}")
        return elapsed

    def unload(self, name: str) -> float:
        """UNLOAD ``name``; the seconds the request took."""
        started = time.monotonic()
        answer = self.session.delete(f"{self.url}/models/{name}", timeout=TIMEOUT_S)
        elapsed = time.monotonic() - started
        if answer.status_code != 200:
            raise RuntimeError(f"UNLOAD of {name} ({self.mode}) failed: {answer.text}")
        return elapsed

    def invoke(
        self, name: str, body: bytes, content_type: str, session: requests.Session | None = None
    ) -> float:
        """One invocation; the seconds it took (it must answer 200)."""
        started = time.monotonic()
        answer = (session or self.session).post(
            f"{self.url}/models/{name}/invoke",
            data=body,
            timeout=TIMEOUT_S,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        elapsed = time.monotonic() - started
        if answer.status_code != 200:
            raise RuntimeError(f"invoke of {name} ({self.mode}) failed: {answer.text[:300]}")
        return elapsed

    def model_processes(self, name: str) -> list[psutil.Process]:
        """The processes that exist because ``name`` is loaded (worker, its backend, launcher)."""
        return model_processes(self.native.descendants(), name)

    def fixed_processes(self) -> list[psutil.Process]:
        """The processes every server has, loaded models or not (Java; the zygote)."""
        return [p for p in self.native.descendants() if model_name(cmdline(p)) is None]


def mme_serve(
    mode: str | None, models_root: Path, log_dir: Path, tag: str, env: dict[str, str] | None = None
) -> BenchServer:
    """`mme serve` with ``MME_WORKER_MODE=mode`` (None: its default) and ``env``.

    Its log goes to ``log_dir``.
    """
    label = mode or "mme serve"
    mode_env = {"MME_WORKER_MODE": mode} if mode else {}
    native = NativeServer(
        models_root,
        env={**mode_env, **(env or {})},
        log_path=log_dir / f"serve-{label.replace(' ', '-')}-{tag}.log",
    )
    return BenchServer(label, native, READY_LINE)
