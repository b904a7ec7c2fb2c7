"""`mme endpoint` refuses to start, with a clear message, when it cannot work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.endpoint import base_env
from mme.ports import free_port


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mme.cli", "endpoint", *args],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_model_data_url_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    result = _run("--model-data-url", str(tmp_path / "nowhere"), "--port", str(free_port()))

    assert result.returncode == 2
    assert "is not a folder" in result.stderr


def test_an_unknown_url_scheme_is_refused(tmp_path: Path) -> None:
    result = _run("--model-data-url", "gs://bucket/models/", "--port", str(free_port()))

    assert result.returncode == 2
    assert "use s3://bucket/prefix/ or a local folder" in result.stderr


def test_an_endpoint_name_sagemaker_would_refuse_is_refused(tmp_path: Path) -> None:
    result = _run(
        "--model-data-url", str(tmp_path), "--port", str(free_port()), "--endpoint-name=-not-a-name"
    )

    assert result.returncode == 2
    assert "--endpoint-name '-not-a-name' is not a name SageMaker takes" in result.stderr


def test_a_container_that_does_not_answer_stops_the_start(tmp_path: Path) -> None:
    silent = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    result = _run(
        "--model-data-url",
        str(tmp_path),
        "--port",
        str(free_port()),
        "--container-url",
        silent,
        "--startup-timeout",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
    )

    assert result.returncode == 1
    assert f"container at {silent} not ready" in result.stdout + result.stderr


def test_every_option_is_documented() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mme.cli", "endpoint", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=base_env(),
    )

    assert result.returncode == 0
    for option in (
        "--model-data-url",
        "--s3-endpoint-url",
        "--region",
        "--endpoint-name",
        "--variant-name",
        "--host",
        "--port",
        "--container-url",
        "--container-models-dir",
        "--invocation-timeout",
        "--load-timeout",
        "--startup-timeout",
        "--cache-dir",
        "--max-loaded-models",
        "--cache-max-mb",
        "--max-model-mb",
        "--model-cache-setting",
    ):
        assert option in result.stdout
