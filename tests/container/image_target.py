"""The built image as a test target: ``podman run ... IMAGE serve``, a drop-in for NativeServer.

The container shares the host's network (traffic stays on loopback) and listens on a free port
given as SAGEMAKER_BIND_TO_PORT; ``models_root`` is mounted at /opt/ml/models.
Environment: MME_TEST_IMAGE (default mme:test), MME_TEST_ENGINE (default podman).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from harness.processes import runs_worker
from harness.servers import wait_for_ping
from mme.ports import free_port

IMAGE = os.environ.get("MME_TEST_IMAGE", "mme:test")
ENGINE = os.environ.get("MME_TEST_ENGINE", "podman")
# crun fails on this machine's cgroups; podman's default ulimits exceed the machine's limits.
ENGINE_FLAGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=8192:8192",
]
CONTAINER_MODELS = "/opt/ml/models"
ENGINE_TIMEOUT_S = 60.0


def engine(
    *args: str, timeout_s: float = ENGINE_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS`` (or MME_TEST_ENGINE) and capture its output."""
    return subprocess.run(
        [ENGINE, *args], capture_output=True, text=True, timeout=timeout_s, check=check
    )


def image_config(image: str = IMAGE) -> dict[str, Any]:
    """The image's config (``Labels``, ``User``, ``Entrypoint``, ``Cmd``, ...)."""
    inspected = json.loads(engine("image", "inspect", image).stdout)
    return dict(inspected[0]["Config"])


def image_labels(image: str = IMAGE) -> dict[str, str]:
    """The image's labels, as ``podman inspect`` reports them."""
    return dict(image_config(image).get("Labels") or {})


def image_size(image: str = IMAGE) -> int:
    """The image's size in bytes."""
    return int(engine("image", "inspect", image, "--format", "{{.Size}}").stdout.strip())


def _run_options(env: dict[str, str] | None, user: str | None) -> list[str]:
    options = [*ENGINE_FLAGS, "--network", "host"]
    for key, value in (env or {}).items():
        options += ["-e", f"{key}={value}"]
    if user is not None:
        options += ["--user", user]
    return options


def run_command(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    user: str | None = None,
    image: str = IMAGE,
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm IMAGE ARGV``: a non-``serve`` command; its exit code comes back."""
    return engine(
        "run", "--rm", *_run_options(env, user), image, *argv, timeout_s=timeout_s, check=False
    )


class ImageServer:
    """The image running ``serve``; models live under ``models_root/<name>/model`` on the host."""

    def __init__(
        self,
        models_root: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        log_path: Path | None = None,
        *,
        image: str = IMAGE,
        user: str | None = None,
    ) -> None:
        self.models_root = models_root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Only what the test asks for: the host's environment stays out of the container.
        self.env = {"SAGEMAKER_BIND_TO_PORT": str(self.port), **(env or {})}
        self.args = args or []
        self.log_path = log_path or models_root.parent / f"serve-{self.port}.log"
        self.image = image
        self.user = user
        self.name = f"mme-test-{os.getpid()}-{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.stop_seconds: float | None = None
        self._init: psutil.Process | None = None

    def model_url(self, name: str) -> str:
        """The ``url`` of a LOAD request: the path the container sees for ``<name>/model``."""
        return f"{CONTAINER_MODELS}/{name}/model"

    def command(self) -> list[str]:
        """The ``podman run`` command line of this server."""
        return [
            ENGINE,
            "run",
            "--rm",
            "--name",
            self.name,
            *_run_options(self.env, self.user),
            "-v",
            f"{self.models_root}:{CONTAINER_MODELS}",
            self.image,
            "serve",
            *self.args,
        ]

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the container without waiting for it; its output goes to the log."""
        self.models_root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        return self.process

    def start(self, timeout_s: float = 120) -> ImageServer:
        """Start the container and wait until ``/ping`` answers."""
        process = self.launch()
        try:
            wait_for_ping(self.url, process, timeout_s)
            self._init = self._container_init()
        except BaseException:
            self.remove()
            raise
        return self

    def _container_init(self) -> psutil.Process | None:
        found = engine("inspect", "--format", "{{.State.Pid}}", self.name, check=False)
        pid = int(found.stdout.strip() or 0) if found.returncode == 0 else 0
        try:
            return psutil.Process(pid) if pid > 0 else None
        except psutil.NoSuchProcess:
            return None

    def descendants(self) -> list[psutil.Process]:
        """Every live process under ``mme serve`` in the container (Java, workers), as NativeServer.

        The container's PID 1 is the entrypoint; ``mme serve`` is its child.
        """
        init = self._init
        if init is None or not init.is_running():
            return []
        try:
            for child in init.children():
                if "mme.cli" in " ".join(child.cmdline()):
                    return list(child.children(recursive=True))
            return list(init.children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def worker_alive(self, worker_id: str) -> bool:
        """Whether a Python worker of the server, by MMS's worker id (``9000-ab12``), runs."""
        return runs_worker(self.descendants(), worker_id)

    def log(self) -> str:
        """What the container printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM the container and return its exit code (removed by force after ``timeout_s``)."""
        assert self.process is not None
        if self.process.poll() is None:
            started = time.monotonic()
            engine("kill", "--signal", "TERM", self.name, check=False)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.remove()
            self.stop_seconds = time.monotonic() - started
        return self.process.returncode

    def remove(self) -> None:
        """Remove the container by force and reap ``podman run``."""
        engine("rm", "--force", "--time", "0", self.name, check=False)
        if self.process is not None:
            try:
                self.process.wait(timeout=ENGINE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
