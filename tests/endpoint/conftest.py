"""Shared fixtures: the model archives, moto's S3 server, and one `mme serve` container."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.endpoint import ContainerProcess
from harness.models import scaled_model
from tests.endpoint.archives import (
    ECHO_CODE,
    LOAD_FAILS_CODE,
    OOM_ONCE_CODE,
    PREDICT_FAILS_CODE,
    SLOW_LOAD_CODE,
    bomb_archive,
    hostile_archive,
    pack,
)

BOMB_BYTES = 16 * 1024 * 1024  # the endpoints under test accept 8 MiB (--max-model-mb 8)
SCALES = {
    "a.tar.gz": 2.0,
    "b.tar.gz": 3.0,
    "c.tar.gz": 5.0,
    "concurrent.tar.gz": 7.0,
    "oom-once.tar.gz": 11.0,
    "slow.tar.gz": 13.0,
    "disabled.tar.gz": 17.0,
}


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test archive by its TargetModel (relative path under the prefix)."""
    root = tmp_path_factory.mktemp("archives")
    sources = root / "sources"
    built = {
        name: pack(scaled_model(sources / name, scale), root / "out" / name)
        for name, scale in SCALES.items()
        if name not in ("oom-once.tar.gz", "slow.tar.gz")
    }
    code = {
        "sub/dir/echo.tar.gz": (19.0, ECHO_CODE),
        "predict-fails.tar.gz": (1.0, PREDICT_FAILS_CODE),
        "load-fails.tar.gz": (1.0, LOAD_FAILS_CODE),
        "oom-once.tar.gz": (SCALES["oom-once.tar.gz"], OOM_ONCE_CODE),
        "slow.tar.gz": (SCALES["slow.tar.gz"], SLOW_LOAD_CODE),
    }
    for name, (scale, source) in code.items():
        built[name] = pack(scaled_model(sources / name, scale, source), root / "out" / name)
    built["slip.tar.gz"] = hostile_archive(
        root / "out" / "slip.tar.gz", "dotdot", "escaped-by-slip.txt", depth=5
    )
    built["link-slip.tar.gz"] = hostile_archive(
        root / "out" / "link-slip.tar.gz", "symlink-out", "escaped-by-link.txt", depth=5
    )
    built["bomb.tar.gz"] = bomb_archive(root / "out" / "bomb.tar.gz", BOMB_BYTES)
    return built


@pytest.fixture(scope="session")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerProcess]:
    """One real `mme serve` that several `mme endpoint --container-url` tests front."""
    log = tmp_path_factory.mktemp("container") / "serve.log"
    server = ContainerProcess(log).start_serving()
    try:
        yield server
    finally:
        server.stop()
