"""`mme serve`: Multi Model Server in multi-model mode, supervised until SIGTERM."""

from __future__ import annotations

import contextlib
import errno
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

import mms
from sagemaker_inference import model_server

from mme.capacity import Capacity, raise_limits
from mme.gateway.app import Gateway, GatewayThread
from mme.gateway.management import Management
from mme.gateway.metrics import GatewayMetrics
from mme.gateway.scheduler import Scheduler
from mme.gateway.upstream import Upstream
from mme.lifetime import dying_with_parent
from mme.ports import free_port
from mme.prefork.zygote_process import ZygoteError, ZygoteProcess
from mme.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_HANDLER_SERVICE = "mme.handler_service:handle"
STOP_GRACE_S = 20.0  # SageMaker sends SIGKILL 30 s after SIGTERM
DRAIN_LIMIT_S = 15.0  # of the grace, what the requests in flight may use before MMS stops
DRAIN_SETTLE_POLLS = 3  # nothing in flight this many polls in a row: the drain is over
POLL_INTERVAL_S = 0.2
BATCH_OVERHEAD_BYTES = 1024 * 1024  # a batch's index and headers
START_FAILED_EXIT = 1  # never healthy
CRASHED_EXIT = 70  # EX_SOFTWARE: MMS ended on its own with a status that would read otherwise

_LOG4J_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN"}


class ServerStartError(RuntimeError):
    """MMS did not start, or did not become healthy in time."""


def mms_properties(settings: Settings, handler_service: str, mms_port: int) -> str:
    """The MMS configuration: the toolkit's multi-model defaults, then our settings.

    MMS listens on ``mms_port`` of the loopback interface only: the gateway owns the
    server's port.
    """
    with open(model_server.MME_MMS_CONFIG_FILE, encoding="utf-8") as defaults:
        lines = [line.rstrip("\n") for line in defaults if "$$" not in line]
    address = f"http://127.0.0.1:{mms_port}"
    lines += [
        f"default_service_handler={handler_service}",
        f"default_workers_per_model={settings.workers_per_model}",
        f"inference_address={address}",
        f"management_address={address}",
        f"default_response_timeout_seconds={settings.response_timeout_s}",
        # The gateway refuses a request over the limit; MMS carries batches of them. The
        # worker answers 413 for a response over the limit; this only bounds the wire.
        f"max_request_size={batch_bytes(settings) + BATCH_OVERHEAD_BYTES}",
        f"max_response_size={batch_bytes(settings) + BATCH_OVERHEAD_BYTES}",
        f"job_queue_size={settings.job_queue_size}",
    ]
    return "\n".join(lines) + "\n"


def batch_bytes(settings: Settings) -> int:
    """The most request (or answer) bytes that one of the gateway's batches may carry."""
    # MMS keeps its limits in a Java int.
    return min(
        settings.max_payload_bytes * settings.max_batch_size, 2**31 - 1 - BATCH_OVERHEAD_BYTES
    )


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


def _java_command(python: str, config_file: str, log_config: str, env: dict[str, str]) -> list[str]:
    """The command MMS's own launcher (mms/model_server.py) would run, with our ``--python``.

    We start Java ourselves because that launcher always passes its own interpreter as
    the workers' Python; in prefork mode the workers' Python is our launcher.
    """
    mms_home = os.path.dirname(os.path.dirname(os.path.realpath(mms.__file__)))
    java_home = env.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else "java"
    command = [
        java,
        f"-Dmodel_server_home={mms_home}",
        f"-Dlog4j.configurationFile=file://{os.path.realpath(log_config)}",
        f"-Djava.io.tmpdir={env['TEMP']}",
    ]
    return [
        *command,
        "-cp",
        f".:{os.path.join(mms_home, 'mms', 'frontend', '*')}",
        "com.amazonaws.ml.mms.ModelServer",
        "--python",
        python,
        "-f",
        config_file,
        "-s",
        "/",
    ]


def answers_ping(port: int) -> bool:
    """Whether MMS on ``port`` (this host) answers ``/ping`` with 200 within 2 s."""
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
        self._terminated = False
        self._idle_polls = 0
        self._drain_announced = False
        # Short, because MMS puts unix sockets here (their paths are limited to ~108 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="mme-", dir="/tmp")
        self.mms_port = free_port()
        upstream = Upstream("127.0.0.1", self.mms_port)
        metrics = (
            GatewayMetrics(settings.metrics_path, self.temp_dir, settings.workers_per_model)
            if settings.metrics_path
            else None
        )
        # metrics hook: what is sent to the workers counts them busy
        send = metrics.to_workers(upstream.send) if metrics else upstream.send
        scheduler = Scheduler(
            send,
            settings.cpu_budget,
            settings.workers_per_model,
            settings.job_queue_size,
            batch_bytes(settings),
        )
        if metrics:
            metrics.watch(scheduler)  # metrics hook: queue waits, the CPU budget's use
        self.capacity = Capacity.for_settings(settings)
        self.gateway = Gateway(
            upstream,
            Management(upstream, scheduler, self.temp_dir, self.capacity),
            scheduler,
            metrics,
        )
        self._gateway_thread = GatewayThread(self.gateway, upstream, settings.max_payload_bytes)
        self._zygote = _zygote_for(settings, self.temp_dir)

    def start(self) -> None:
        """Start MMS and return once ``/ping`` answers; raise ServerStartError otherwise."""
        handler, handler_dir = resolve_handler(self.handler_service)
        try:
            # First: the port is the one thing another program can take from us.
            self._gateway_thread.listen(self.settings.bind_address, self.settings.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerStartError(
                    f"port {self.settings.port} is in use (SAGEMAKER_BIND_TO_PORT)"
                ) from exc
            raise ServerStartError(
                f"cannot listen on {self.settings.bind_address}:{self.settings.port} "
                f"(SAGEMAKER_BIND_TO_PORT, MME_BIND_ADDRESS): {exc.strerror or exc}"
            ) from exc
        raise_limits()  # before MMS and the zygote start: they inherit them
        config_file = os.path.join(self.temp_dir, "mms.properties")
        with open(config_file, "w", encoding="utf-8") as out:
            out.write(mms_properties(self.settings, handler, self.mms_port))
        log_config = str(resources.files("mme") / "etc" / "log4j2.xml")
        env = self.settings.worker_environment(handler, self.temp_dir)
        if handler_dir:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [handler_dir, env.get("PYTHONPATH")]))
        env["MME_LOG4J_LEVEL"] = _log4j_level(self.settings.log_level)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        os.makedirs(env["LOG_LOCATION"], exist_ok=True)
        logger.info(
            "starting MMS on 127.0.0.1:%d behind %s port %d (handler %s, %s workers, temp %s)",
            self.mms_port,
            self.settings.bind_address,
            self.settings.port,
            self.handler_service,
            self.settings.worker_mode,
            self.temp_dir,
        )
        python = self._zygote.launcher if self._zygote else sys.executable
        try:
            # Its own session: the process group that request_stop and stop signal.
            self.process = subprocess.Popen(
                dying_with_parent(_java_command(python, config_file, log_config, env)),
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"cannot run Java for MMS: {exc}") from exc
        try:
            if self._zygote:
                self._zygote.start(env)
            self._wait_until_healthy()
        except ZygoteError as exc:
            raise ServerStartError(str(exc)) from exc

    def _workers_ready(self) -> bool:
        # In prefork mode the server is not reported healthy until the zygote is ready:
        # a LOAD before then waits for the zygote's imports (MMS's own /ping answers earlier).
        return self._zygote is None or self._zygote.ready()

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline and not self.stop_requested:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"MMS exited with code {code} before the server was ready on port "
                    f"{self.mms_port} (is Java 17 missing?)"
                )
            if answers_ping(self.mms_port) and self._workers_ready():
                zygote = self._zygote.process if self._zygote else None
                self.capacity.measure(self.process.pid, zygote.pid if zygote else None)
                self._gateway_thread.set_ready()
                logger.info(
                    "the model server is healthy on http://%s:%d",
                    self.settings.bind_address,
                    self.settings.port,
                )
                if self._zygote:
                    self._zygote.watch()
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
        """Ask for a stop; :meth:`wait` carries it out. Safe in a signal handler."""
        if self._stop_requested_at is None and self.process is not None:
            self._stop_requested_at = time.monotonic()

    def wait(self) -> int:
        """Block until MMS exits; once a stop is requested, drain, then SIGTERM, then SIGKILL."""
        assert self.process is not None
        while (code := self.process.poll()) is None:
            started = self._stop_requested_at
            if started is not None:
                self._advance_stop(time.monotonic() - started)
            time.sleep(POLL_INTERVAL_S)
        return code

    def _advance_stop(self, elapsed_s: float) -> None:
        assert self.process is not None
        if not self._terminated:
            # MMS resets the connections of requests in flight when it gets SIGTERM, so
            # the group gets it only once no worker is busy (or the drain time is up).
            if self._drained() or elapsed_s > DRAIN_LIMIT_S:
                if elapsed_s > DRAIN_LIMIT_S:
                    logger.warning(
                        "requests still in flight after %.0f s; stopping anyway", DRAIN_LIMIT_S
                    )
                self._terminated = True
                _signal_group(self.process.pid, signal.SIGTERM)
        elif elapsed_s > STOP_GRACE_S:
            logger.warning("MMS did not stop within %.0f s; killing it", STOP_GRACE_S)
            _signal_group(self.process.pid, signal.SIGKILL)

    def _drained(self) -> bool:
        busy = self.gateway.in_flight
        if busy and not self._drain_announced:
            self._drain_announced = True
            logger.info("waiting for %d request(s) in flight to finish before stopping", busy)
        self._idle_polls = 0 if busy else self._idle_polls + 1
        return self._idle_polls >= DRAIN_SETTLE_POLLS

    def stop(self) -> None:
        """Stop MMS, kill any worker left behind, and remove the temp folder."""
        if self.process is not None:
            self.request_stop()
            self.wait()
            _signal_group(self.process.pid, signal.SIGKILL)
        self._gateway_thread.stop()
        if self._zygote:
            self._zygote.stop()  # its own process group: the workers forked from it
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _zygote_for(settings: Settings, temp_dir: str) -> ZygoteProcess | None:
    if settings.worker_mode != "prefork":
        return None
    try:
        return ZygoteProcess(temp_dir)
    except ZygoteError as exc:
        logger.warning("%s; running stock workers instead", exc)
        return None


def _signal_group(pgid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signo)


def serve(settings: Settings, handler_service: str = DEFAULT_HANDLER_SERVICE) -> int:
    """Run MMS until it exits or the process gets SIGTERM/SIGINT; return the exit status.

    0: stopped as asked. START_FAILED_EXIT: it never became healthy (a new start may work:
    the image's entrypoint tries again). Anything else: the server stopped on its own after
    it had started (MMS's status, 128 + N for signal N).
    """
    server = ModelServer(settings, handler_service)

    def _on_signal(signo: int, _frame: FrameType | None) -> None:
        logger.info("got %s: stopping the model server", signal.Signals(signo).name)
        server.request_stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        code = server.wait()
        stopped = server.stop_requested  # read before stop(), which requests one itself
    except ServerStartError as exc:
        if server.stop_requested:
            return 0
        logger.error("%s", exc)
        return START_FAILED_EXIT
    finally:
        server.stop()
        for signo, handler in previous.items():
            signal.signal(signo, handler)
    if stopped:
        logger.info("model server stopped")
        return 0
    logger.error("MMS exited unexpectedly with code %d", code)
    status = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say
    return status if status not in (0, START_FAILED_EXIT) else CRASHED_EXIT
