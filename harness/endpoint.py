"""`mme endpoint` and the `mme serve` it fronts, as child processes on 127.0.0.1, with dummy
AWS credentials (nothing reaches AWS)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config

from harness.prometheus import scrape, totals
from harness.servers import ServerProcess
from mme.ports import free_port

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def base_env() -> dict[str, str]:
    """The environment of every server started here: dummy AWS, one thread, no proxy."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "MME_NUM_THREADS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        env.pop(name, None)
    return env


def fronting(container_url: str, models: str | Path, cache: Path) -> list[str]:
    """`mme endpoint`'s options to serve ``models`` through the running ``mme serve`` at
    ``container_url``, sharing ``cache`` with it as its models folder."""
    return [
        "--model-data-url",
        str(models),
        "--cache-dir",
        str(cache),
        "--container-url",
        container_url,
        "--container-models-dir",
        str(cache),
    ]


class Endpoint(ServerProcess):
    """`mme endpoint` with the given options, on a free port."""

    def __init__(
        self, name: str, options: list[str], log_path: Path, wrapper: tuple[str, ...] = ()
    ) -> None:
        port = free_port()
        super().__init__(
            ["endpoint", "--endpoint-name", name, "--port", str(port), *options],
            port,
            log_path,
            wrapper,
        )
        self.name = name

    def client(self, **config: Any) -> Any:
        """The real boto3 sagemaker-runtime client, pointed at this endpoint."""
        settings = {
            "read_timeout": 120,
            "retries": {"mode": "standard", "max_attempts": 3},
            **config,
        }
        return boto3.client(
            "sagemaker-runtime",
            region_name=REGION,
            endpoint_url=self.url,
            config=Config(**settings),
            **DUMMY_CREDENTIALS,
        )

    def metrics(self) -> defaultdict[str, float]:
        """GET /metrics as {sample name: value}, summed over the models' labels (CloudWatch's
        per-endpoint numbers); responses keep their code in the name; absent names are 0."""
        return totals(scrape(self.url))

    def call_lines(self, target_model: str) -> list[str]:
        """The per-call log lines for one TargetModel."""
        return [
            line
            for line in self.log().splitlines()
            if "invocation request_id=" in line and f"target_model={target_model!r}" in line
        ]


class ContainerProcess(ServerProcess):
    """`mme serve` (MMS in multi-model mode) on a free port, for an endpoint to front."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(["serve"], free_port(), log_path)

    def start_serving(self, timeout_s: float = 180) -> ContainerProcess:
        """Start MMS with SAGEMAKER_BIND_TO_PORT set to our port."""
        self.start({**base_env(), "SAGEMAKER_BIND_TO_PORT": str(self.port)}, timeout_s)
        return self

    def models_under(self, folder: Path) -> dict[str, str]:
        """{modelName: modelUrl} of the loaded models whose folder is under ``folder``."""
        answer = requests.get(f"{self.url}/models", timeout=10)
        answer.raise_for_status()
        return {
            model["modelName"]: model["modelUrl"]
            for model in answer.json()["models"]
            if model["modelUrl"].startswith(f"{folder}/")
        }

    def unload_under(self, folder: Path) -> None:
        """Unload what an endpoint left loaded (SageMaker would keep it; tests must not)."""
        for name in self.models_under(folder):
            requests.delete(f"{self.url}/models/{name}", timeout=130)
