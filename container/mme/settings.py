"""Every setting of the serving core, read once from the environment.

This is the only module that reads environment variables. Each setting names the
variable it comes from, and a bad value fails fast with a message naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_MMS_PORT = 32766  # MMS refuses to bind above this port
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


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """The serving core's configuration (see the README's configuration table)."""

    port: int = 8080
    workers_per_model: int = 1
    response_timeout_s: int = 60
    max_payload_bytes: int = 6 * MIB
    job_queue_size: int = 100
    log_level: int = logging.INFO
    base_dir: str = "/opt/ml"
    program_module: str = "inference"
    num_threads: int = 1
    startup_timeout_s: int = 600
    handler_service: str = ""
    server_temp_dir: str = ""
    passthrough_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default: ``os.environ``), validating each value."""
        env = os.environ if env is None else env
        timeout_var = (
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"
            if env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "").strip()
            else "SAGEMAKER_MODEL_SERVER_TIMEOUT"  # read as seconds: MMS would read minutes
        )
        threads_default = _integer(env, "OMP_NUM_THREADS", _available_cpus(), 1, 1024)
        return cls(
            port=_integer(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, MAX_MMS_PORT),
            workers_per_model=_integer(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1, 1, 64),
            response_timeout_s=_integer(env, timeout_var, 60, 1, 3600),
            max_payload_bytes=_integer(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, 1, 2047) * MIB,
            job_queue_size=_integer(env, "MME_JOB_QUEUE_SIZE", 100, 1, 100_000),
            log_level=_log_level(env, "SAGEMAKER_CONTAINER_LOG_LEVEL"),
            base_dir=env.get("SAGEMAKER_BASE_DIR", "").strip() or "/opt/ml",
            program_module=_program(env, "SAGEMAKER_PROGRAM"),
            num_threads=_integer(env, "MME_NUM_THREADS", threads_default, 1, 1024),
            startup_timeout_s=_integer(env, "SAGEMAKER_STARTUP_TIMEOUT", 600, 1, 3600),
            handler_service=env.get("SAGEMAKER_HANDLER", "").strip(),
            server_temp_dir=env.get("MME_SERVER_TEMP_DIR", "").strip(),
            passthrough_env=dict(env),
        )

    @property
    def models_dir(self) -> str:
        """Where SageMaker extracts model archives: ``<base dir>/models``."""
        return os.path.join(self.base_dir, "models")

    def worker_environment(self, handler_service: str, temp_dir: str) -> dict[str, str]:
        """The environment that MMS and its Python workers run with."""
        env = dict(self.passthrough_env)
        env.update(
            {
                "SAGEMAKER_MULTI_MODEL": "true",
                "SAGEMAKER_HANDLER": handler_service,
                "SAGEMAKER_PROGRAM": f"{self.program_module}.py",
                "SAGEMAKER_BASE_DIR": self.base_dir,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": str(self.log_level),
                "OMP_NUM_THREADS": str(self.num_threads),
                "MKL_NUM_THREADS": str(self.num_threads),
                "MME_NUM_THREADS": str(self.num_threads),
                # MMS keeps worker sockets and its pid file in the temp dir: a private one
                # per server keeps two servers on one host apart.
                "MME_SERVER_TEMP_DIR": temp_dir,
                "TEMP": temp_dir,
                "TMPDIR": temp_dir,
                "LOG_LOCATION": os.path.join(temp_dir, "logs"),
                "METRICS_LOCATION": os.path.join(temp_dir, "logs"),
            }
        )
        return env
