"""Helpers for the deploy tests: run `mme` as a user would, and make model archives."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mme-pytorch:latest"
CLI_TIMEOUT_S = 120  # a bound on each subprocess, not a timing assertion


def make_archive(path: Path, payload: bytes = b"weights") -> Path:
    """A small but real model.tar.gz."""
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("model.pt")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return path


def run_mme(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m mme.cli ARGS` the way a user would; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "mme.cli", *args],
        input=stdin,
        capture_output=True,
        env=dict(os.environ if env is None else env),
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def text(output: bytes) -> str:
    """Decoded process output, for assertions and failure messages."""
    return output.decode(errors="replace")


def deploy_args(endpoint: str, moto_url: str, prefix: str, *extra: str) -> list[str]:
    """The arguments of a typical `mme deploy` against moto."""
    return [
        "deploy",
        endpoint,
        "--endpoint-url",
        moto_url,
        "--image",
        IMAGE,
        "--model-data-url",
        prefix,
        "--role",
        ROLE,
        "--poll-interval",
        "1",
        *extra,
    ]


def resource_names(sagemaker: Any, endpoint: str) -> tuple[list[str], list[str]]:
    """The endpoint's model and config names (moto ignores NameContains: filter here)."""
    mine = f"{endpoint}-"
    return _listed(sagemaker, "list_models", "Models", "ModelName", mine), _listed(
        sagemaker, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", mine
    )


def _listed(sagemaker: Any, operation: str, key: str, name: str, start: str) -> list[str]:
    pages = sagemaker.get_paginator(operation).paginate()
    return sorted(i[name] for page in pages for i in page[key] if i[name].startswith(start))
