"""The servers under soak: one `mme serve` and one `mme endpoint` in front of it, on loopback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import requests

from harness.endpoint import ContainerProcess, Endpoint, base_env
from harness.polling import wait_until
from soak.census import Census, quiet, take_census

ENDPOINT_NAME = "soak"
UNLOAD_TIMEOUT_S = 130  # MMS's own limit for an UNLOAD is 120 s
QUIET_TIMEOUT_S = 60


@dataclass(frozen=True)
class ServerOptions:
    """How the two servers are set up."""

    worker_mode: str
    max_loaded_models: int
    invocation_timeout_s: float


class Servers:
    """`mme serve` and `mme endpoint --container-url` over the models under ``prefix``."""

    def __init__(self, prefix: Path, work: Path, options: ServerOptions) -> None:
        self.cache = work / "cache"
        self.container = ContainerProcess(work / "serve.log")
        self.endpoint = Endpoint(
            ENDPOINT_NAME,
            [
                "--model-data-url",
                str(prefix),
                "--cache-dir",
                str(self.cache),
                "--container-models-dir",
                str(self.cache),
                "--max-loaded-models",
                str(options.max_loaded_models),
                "--invocation-timeout",
                f"{options.invocation_timeout_s:g}",
            ],
            work / "endpoint.log",
        )
        self.options = options

    def start(self) -> Servers:
        """Start the container, then the endpoint in front of it."""
        self.container.start(
            {
                **base_env(),
                "SAGEMAKER_BIND_TO_PORT": str(self.container.port),
                "MME_WORKER_MODE": self.options.worker_mode,
            }
        )
        self.endpoint.args += ["--container-url", self.container.url]
        try:
            self.endpoint.start(base_env())
        except BaseException:
            self.container.stop()
            raise
        return self

    def stop(self) -> dict[str, int | None]:
        """Stop both (endpoint first); their exit codes."""
        return {"endpoint": self.endpoint.stop(), "serve": self.container.stop()}

    @property
    def serve_pid(self) -> int:
        """The pid of `mme serve`."""
        assert self.container.process is not None
        return self.container.process.pid

    @property
    def endpoint_pid(self) -> int:
        """The pid of `mme endpoint`."""
        assert self.endpoint.process is not None
        return self.endpoint.process.pid

    def model_ids(self) -> dict[str, str]:
        """{TargetModel: the container's name for it}, from the endpoint's "loaded" lines."""
        return dict(re.findall(r"loaded (\S+) as ([0-9a-f]+) in", self.endpoint.log()))

    def loaded_ids(self) -> set[str]:
        """The container's names of the endpoint's models that the container has loaded."""
        return set(self.container.models_under(self.cache))

    def unload(self, model_id: str) -> int:
        """UNLOAD one model straight at the container, as SageMaker does; its status."""
        return requests.delete(
            f"{self.container.url}/models/{model_id}", timeout=UNLOAD_TIMEOUT_S
        ).status_code

    def census(self) -> Census:
        """A census of both servers' process trees."""
        return take_census(self.serve_pid, self.endpoint_pid)

    def unload_all(self) -> bool:
        """Unload every model and wait until its workers are gone; whether they went."""
        wait_until(lambda: not self._unload_loaded(), timeout_s=QUIET_TIMEOUT_S)
        return wait_until(lambda: quiet(self.census()), timeout_s=QUIET_TIMEOUT_S, interval_s=0.5)

    def _unload_loaded(self) -> set[str]:
        loaded = self.loaded_ids()
        for model_id in loaded:
            self.unload(model_id)
        return loaded
