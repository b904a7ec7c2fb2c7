"""Every setting of the serving core, read once from the environment.

This is the only module that reads environment variables. Each setting names the
variable it comes from, and a bad value fails fast with a message naming it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from mme.worker_config import WorkerConfig

MAX_MMS_PORT = 32766  # MMS refuses to bind above this port (its own, private one)
MAX_PORT = 65535
MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range: it must be {low}..{high}")
    return value


def _log_level(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return logging.INFO
    if raw.isdigit():
        return int(raw)
    level = logging.getLevelName(raw.upper())
    if not isinstance(level, int):
        raise SettingsError(f"{name}={raw!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


def _program(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip() or "inference.py"
    module = raw[:-3] if raw.endswith(".py") else raw
    if not module.isidentifier():
        raise SettingsError(f"{name}={raw!r} must name a module in code/, such as inference.py")
    return module


def _absolute_dir(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # Workers run with the model's folder as their working directory: a relative path
    # would point somewhere else for every model.
    if not os.path.isabs(raw):
        raise SettingsError(f"{name}={raw!r} must be an absolute path")
    return raw


REQUIREMENTS_TIMEOUT_VAR = "MME_REQUIREMENTS_TIMEOUT_SECONDS"
LOAD_MARGIN_S = 5  # left of the LOAD's time for model_fn once the install is done


def _requirements_timeout(env: Mapping[str, str], timeout_var: str, response_timeout_s: int) -> int:
    # The install runs inside the LOAD, which MMS abandons after the response timeout:
    # a longer install limit could never take effect, so it is refused rather than ignored.
    if not env.get(REQUIREMENTS_TIMEOUT_VAR, "").strip():
        return max(1, response_timeout_s - LOAD_MARGIN_S)
    value = _integer(env, REQUIREMENTS_TIMEOUT_VAR, 0, 1, 3600)
    if value >= response_timeout_s:
        raise SettingsError(
            f"{REQUIREMENTS_TIMEOUT_VAR}={value} must be less than {timeout_var}="
            f"{response_timeout_s}: the install runs inside the LOAD, which MMS gives up on then"
        )
    return value


WORKER_MODES = ("prefork", "stock")


def _worker_mode(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip().lower() or WORKER_MODES[0]
    if raw not in WORKER_MODES:
        raise SettingsError(
            f"{name}={raw!r} is not a worker mode: use prefork (workers forked from a warm, "
            "pre-imported parent) or stock (a fresh Python interpreter per worker, as MMS does)"
        )
    return raw


def _bind_address(env: Mapping[str, str], name: str) -> str:
    # Natively the management API (which loads any folder it is told to) stays on this
    # host; the image sets 0.0.0.0, as SageMaker reaches the container from outside.
    raw = env.get(name, "").strip() or "127.0.0.1"
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not an IP address (127.0.0.1, 0.0.0.0, ::)"
        ) from None
    return raw


# Paths the container API already answers: a metrics path there would hide them.
RESERVED_PATHS = ("/ping", "/models", "/invocations", "/execution-parameters")


def _switch(env: Mapping[str, str], name: str) -> bool:
    """An on/off setting that is on unless set off."""
    raw = env.get(name, "").strip().lower() or "on"
    if raw not in ("on", "off", "true", "false", "1", "0"):
        raise SettingsError(f"{name}={raw!r} must be on or off")
    return raw not in ("off", "false", "0")


def _metrics_path(env: Mapping[str, str], switch: str, name: str) -> str:
    """The path of the Prometheus metrics, or "" when they are off."""
    if not _switch(env, switch):
        return ""
    path = env.get(name, "").strip() or "/metrics"
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise SettingsError(f"{name}={path!r} must be a path such as /metrics")
    if any(path == reserved or path.startswith(reserved + "/") for reserved in RESERVED_PATHS):
        raise SettingsError(
            f"{name}={path!r} is a path of the container API; use another, such as /metrics"
        )
    return path


def _available_cores() -> int:
    """The cores this process may use: its CPU affinity, its cgroup's quota (docker --cpus),
    and no more than the physical cores (torch's own default for its thread pool)."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = cores or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False)
    return max(1, min(cores, physical or cores, _cgroup_quota() or cores))


def _cgroup_quota() -> int | None:
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as limit:
            quota, period = limit.read().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, -(-int(quota) // int(period)))


def _threads(env: Mapping[str, str]) -> tuple[int, int]:
    # A thread count the user set wins: every worker runs with it, and nothing is shared.
    # Otherwise the workers share the cores (the CPU budget).
    for name in ("MME_NUM_THREADS", "OMP_NUM_THREADS"):
        if env.get(name, "").strip():
            return _integer(env, name, 1, 1, 1024), 0
    budget = _integer(env, "MME_CPU_BUDGET", _available_cores(), 1, 1024)
    return budget, budget


@dataclass(frozen=True)
class Settings:
    """The serving core's configuration (see docs/configuration.md)."""

    port: int = 8080
    bind_address: str = "127.0.0.1"
    workers_per_model: int = 1
    response_timeout_s: int = 60
    max_payload_bytes: int = 6 * MIB
    job_queue_size: int = 100
    log_level: int = logging.INFO
    base_dir: str = "/opt/ml"
    program_module: str = "inference"
    num_threads: int = 1
    cpu_budget: int = 0
    max_batch_size: int = 8
    max_batch_delay_ms: int = 0
    startup_timeout_s: int = 600
    start_attempts: int = 3
    handler_service: str = ""
    requirements_dir: str = ""
    requirements_timeout_s: int = 0
    worker_mode: str = WORKER_MODES[0]
    # Prefork: a model's workers are threads of one process, with one copy of the model.
    workers_share_model: bool = True
    metrics_path: str = "/metrics"  # "": no metrics (MME_METRICS=off)
    # How many models the server holds (mme.capacity): a maximum of the user's (0: only
    # the system's limits), and the memory a LOAD must leave available.
    max_loaded_models: int = 0
    min_available_memory_mb: int = 256

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default: ``os.environ``), validating each value."""
        env = os.environ if env is None else env
        timeout_var = (
            "SAGEMAKER_MODEL_SERVER_TIMEOUT"  # read as seconds: MMS would read minutes
            if env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", "").strip()
            and not env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "").strip()
            else "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"
        )
        num_threads, cpu_budget = _threads(env)
        response_timeout_s = _integer(env, timeout_var, 60, 1, 3600)
        base_dir = env.get("SAGEMAKER_BASE_DIR", "").strip() or "/opt/ml"
        return cls(
            port=_integer(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, MAX_PORT),
            bind_address=_bind_address(env, "MME_BIND_ADDRESS"),
            workers_per_model=_integer(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1, 1, 64),
            response_timeout_s=response_timeout_s,
            max_payload_bytes=_integer(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, 1, 2047) * MIB,
            job_queue_size=_integer(env, "MME_JOB_QUEUE_SIZE", 100, 1, 100_000),
            log_level=_log_level(env, "SAGEMAKER_CONTAINER_LOG_LEVEL"),
            base_dir=base_dir,
            program_module=_program(env, "SAGEMAKER_PROGRAM"),
            num_threads=num_threads,
            cpu_budget=cpu_budget,
            max_batch_size=_integer(env, "MME_MAX_BATCH_SIZE", 8, 1, 256),
            max_batch_delay_ms=_integer(env, "MME_MAX_BATCH_DELAY_MS", 0, 0, 10_000),
            startup_timeout_s=_integer(env, "SAGEMAKER_STARTUP_TIMEOUT", 600, 1, 3600),
            start_attempts=_integer(env, "MME_START_ATTEMPTS", 3, 1, 20),
            handler_service=env.get("SAGEMAKER_HANDLER", "").strip(),
            requirements_dir=_absolute_dir(
                env, "MME_REQUIREMENTS_DIR", os.path.join(base_dir, "model-deps")
            ),
            requirements_timeout_s=_requirements_timeout(env, timeout_var, response_timeout_s),
            worker_mode=_worker_mode(env, "MME_WORKER_MODE"),
            workers_share_model=_switch(env, "MME_WORKERS_SHARE_MODEL"),
            metrics_path=_metrics_path(env, "MME_METRICS", "MME_METRICS_PATH"),
            max_loaded_models=_integer(env, "MME_MAX_LOADED_MODELS", 0, 0, 1_000_000),
            min_available_memory_mb=_integer(env, "MME_MIN_AVAILABLE_MEMORY_MB", 256, 0, 1_048_576),
        )

    def worker_config(self, server_temp_dir: str) -> WorkerConfig:
        """What the workers of a server with the private folder ``server_temp_dir`` get."""
        return WorkerConfig(
            server_temp_dir=server_temp_dir,
            response_timeout_s=self.response_timeout_s,
            max_payload_bytes=self.max_payload_bytes,
            num_threads=self.num_threads,
            requirements_dir=self.requirements_dir,
            requirements_timeout_s=self.requirements_timeout_s,
            max_batch_size=self.max_batch_size,
            max_batch_delay_ms=self.max_batch_delay_ms,
            share_model=self.shares_model,
        )

    @property
    def shares_model(self) -> bool:
        """Whether a model's workers are threads of one prefork worker, with one copy of it.

        Only with more than one worker: a lone worker has nobody to share with, and the
        thread that takes the others' connections would cost each model a thread. Not for an
        MMS custom service (SAGEMAKER_HANDLER): it was written for a process per worker."""
        return (
            self.workers_share_model
            and self.workers_per_model > 1
            and self.worker_mode == "prefork"
            and not self.handler_service
        )

    @property
    def models_dir(self) -> str:
        """Where SageMaker extracts model archives: ``<base dir>/models``."""
        return os.path.join(self.base_dir, "models")

    def worker_environment(self, handler_service: str, temp_dir: str) -> dict[str, str]:
        """The environment that MMS and its Python workers run with: this process's, plus
        what MMS and the toolkit read, plus the workers' own config."""
        env = dict(os.environ)
        env.update(self.worker_config(temp_dir).to_env())
        env.update(
            {
                "SAGEMAKER_MULTI_MODEL": "true",
                "SAGEMAKER_HANDLER": handler_service,
                "SAGEMAKER_PROGRAM": f"{self.program_module}.py",
                "SAGEMAKER_BASE_DIR": self.base_dir,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": str(self.log_level),
                "OMP_NUM_THREADS": str(self.num_threads),
                "MKL_NUM_THREADS": str(self.num_threads),
                # MMS keeps worker sockets and its pid file in the temp dir: a private one
                # per server keeps two servers on one host apart.
                "TEMP": temp_dir,
                "TMPDIR": temp_dir,
                "LOG_LOCATION": os.path.join(temp_dir, "logs"),
                "METRICS_LOCATION": os.path.join(temp_dir, "logs"),
            }
        )
        return env
