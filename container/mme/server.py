"""`mme serve`: Multi Model Server in multi-model mode, supervised until SIGTERM."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import resources
from types import FrameType

from sagemaker_inference import model_server

from mme.settings import Settings
from mme.stale_models import StaleModelSweeper

logger = logging.getLogger(__name__)

DEFAULT_HANDLER_SERVICE = "mme.handler_service:handle"
STOP_GRACE_S = 20.0  # SageMaker sends SIGKILL 30 s after SIGTERM
POLL_INTERVAL_S = 0.2

_LOG4J_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN"}


class ServerStartError(RuntimeError):
    """MMS did not start, or did not become healthy in time."""


def mms_properties(settings: Settings, handler_service: str) -> str:
    """The MMS configuration: the toolkit's multi-model defaults, then our settings."""
    with open(model_server.MME_MMS_CONFIG_FILE, encoding="utf-8") as defaults:
        lines = [line.rstrip("\n") for line in defaults if "$$" not in line]
    address = f"http://0.0.0.0:{settings.port}"
    lines += [
        f"default_service_handler={handler_service}",
        f"default_workers_per_model={settings.workers_per_model}",
        f"inference_address={address}",
        f"management_address={address}",
        f"default_response_timeout_seconds={settings.response_timeout_s}",
        f"max_request_size={settings.max_payload_bytes}",
        # the worker answers 413 for a response over the limit; this only bounds the wire
        f"max_response_size={settings.max_payload_bytes + 65536}",
        f"job_queue_size={settings.job_queue_size}",
    ]
    return "\n".join(lines) + "\n"


def resolve_handler(spec: str) -> tuple[str, str | None]:
    """Turn a handler spec into what MMS imports, plus the folder that must be on PYTHONPATH.

    ``/path/to/model_handler.py:handle`` becomes ``model_handler:handle`` importable from
    ``/path/to``; ``package.module:function`` must be importable as it is.
    """
    module, _, function = spec.partition(":")
    suffix = f":{function}" if function else ""
    if module.endswith(".py") or os.sep in module:
        path = os.path.abspath(module if module.endswith(".py") else f"{module}.py")
        if not os.path.isfile(path):
            raise ServerStartError(f"handler service file not found: {path}")
        stem = os.path.splitext(os.path.basename(path))[0]
        return f"{stem}{suffix}", os.path.dirname(path)
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ServerStartError(f"handler service module {module!r} cannot be imported")
    return spec, None


def _log4j_level(level: int) -> str:
    return _LOG4J_LEVELS.get(level, "ERROR" if level < logging.CRITICAL else "FATAL")


def _mms_command(config_file: str, log_config: str) -> list[str]:
    # The launcher beside our interpreter, so that a venv works without being on PATH.
    launcher = os.path.join(os.path.dirname(sys.executable), "multi-model-server")
    if not os.path.exists(launcher):
        launcher = shutil.which("multi-model-server") or launcher
    return [launcher, "--start", "--foreground", "--model-store", "/",
            "--mms-config", config_file, "--log-config", log_config]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ModelServer:
    """One MMS process group with a private temp folder; start, wait, stop."""

    def __init__(self, settings: Settings, handler_service: str = DEFAULT_HANDLER_SERVICE) -> None:
        self.settings = settings
        self.handler_service = handler_service
        self.process: subprocess.Popen[bytes] | None = None
        self._stop_requested_at: float | None = None
        # Short, because MMS puts unix sockets here (their paths are limited to ~108 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="mme-", dir="/tmp")
        self._sweeper = StaleModelSweeper(f"http://127.0.0.1:{settings.port}", self.temp_dir)

    def start(self) -> None:
        """Start MMS and return once ``/ping`` answers; raise ServerStartError otherwise."""
        handler, handler_dir = resolve_handler(self.handler_service)
        config_file = os.path.join(self.temp_dir, "mms.properties")
        with open(config_file, "w", encoding="utf-8") as out:
            out.write(mms_properties(self.settings, handler))
        log_config = str(resources.files("mme") / "etc" / "log4j2.xml")
        env = self.settings.worker_environment(handler, self.temp_dir)
        if handler_dir:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [handler_dir, env.get("PYTHONPATH")]))
        env["MME_LOG4J_LEVEL"] = _log4j_level(self.settings.log_level)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        os.makedirs(env["LOG_LOCATION"], exist_ok=True)
        logger.info("starting MMS on port %d (handler %s, temp %s)",
                    self.settings.port, self.handler_service, self.temp_dir)
        try:
            self.process = subprocess.Popen(
                _mms_command(config_file, log_config), env=env, start_new_session=True
            )
        except OSError as exc:
            raise ServerStartError(f"cannot run multi-model-server: {exc}") from exc
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline and not self.stop_requested:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"MMS exited with code {code} before answering /ping on port "
                    f"{self.settings.port} (is the port in use, or Java 17 missing?)"
                )
            if _healthy(self.settings.port):
                logger.info("MMS is healthy on http://127.0.0.1:%d", self.settings.port)
                self._sweeper.start()
                return
            time.sleep(POLL_INTERVAL_S)
        if self.stop_requested:
            return
        raise ServerStartError(
            f"MMS did not answer /ping within {self.settings.startup_timeout_s} s "
            "(SAGEMAKER_STARTUP_TIMEOUT)"
        )

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop_requested_at is not None

    def request_stop(self) -> None:
        """Send SIGTERM to the whole process group (Java and every worker); safe in a handler."""
        if self._stop_requested_at is None and self.process is not None:
            self._stop_requested_at = time.monotonic()
            _signal_group(self.process.pid, signal.SIGTERM)

    def wait(self) -> int:
        """Block until MMS exits, killing it once a requested stop outlasts the grace period."""
        assert self.process is not None
        while (code := self.process.poll()) is None:
            started = self._stop_requested_at
            if started is not None and time.monotonic() - started > STOP_GRACE_S:
                logger.warning("MMS did not stop within %.0f s; killing it", STOP_GRACE_S)
                _signal_group(self.process.pid, signal.SIGKILL)
            time.sleep(POLL_INTERVAL_S)
        return code

    def stop(self) -> None:
        """Stop MMS, kill any worker left behind, and remove the temp folder."""
        self._sweeper.stop()
        if self.process is not None:
            self.request_stop()
            self.wait()
            _signal_group(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _signal_group(pgid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signo)


def serve(settings: Settings, handler_service: str = DEFAULT_HANDLER_SERVICE) -> int:
    """Run MMS until it exits or the process gets SIGTERM/SIGINT; return the exit status."""
    server = ModelServer(settings, handler_service)

    def _on_signal(signo: int, _frame: FrameType | None) -> None:
        logger.info("got %s: stopping the model server", signal.Signals(signo).name)
        server.request_stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        code = server.wait()
    except ServerStartError as exc:
        if server.stop_requested:
            return 0
        logger.error("%s", exc)
        return 1
    finally:
        server.stop()
        for signo, handler in previous.items():
            signal.signal(signo, handler)
    if server.stop_requested:
        logger.info("model server stopped")
        return 0
    logger.error("MMS exited unexpectedly with code %d", code)
    return code or 1
