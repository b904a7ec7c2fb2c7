"""One container-API suite, two targets: the native `mme serve` and the built image."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.servers import NativeServer
from mme.packaging import build_example, check_model_dir, pack

# Small limits keep the over-limit tests cheap.
SERVER_ENV = {
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "30",
    "MME_NUM_THREADS": "2",
}
EXAMPLE_CODE = Path(__file__).resolve().parents[2] / "code" / "image_classifier"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Image-only tests run only with ``--target image``; otherwise they are deselected."""
    if config.getoption("--target") == "image":
        return
    image_only = [item for item in items if item.get_closest_marker("image")]
    if image_only:
        config.hook.pytest_deselected(items=image_only)
        items[:] = [item for item in items if item not in image_only]


def server_class(config: pytest.Config) -> Any:
    """NativeServer, or the image's drop-in replacement with ``--target image``."""
    if config.getoption("--target") == "image":
        from tests.container.image_target import ImageServer

        return ImageServer
    return NativeServer


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that plays /opt/ml/models: one ``<name>/model`` per model."""
    root = tmp_path_factory.mktemp("models")
    root.chmod(0o755)
    return root


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, models_root: Path) -> Iterator[Any]:
    """One running server for the whole suite."""
    env = {**SERVER_ENV, "MME_WORKER_MODE": request.config.getoption("--worker-mode")}
    instance = server_class(request.config)(models_root, env=env)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def resnet_18_dir(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet_18.tar.gz built by `mme package`'s code and extracted as SageMaker does."""
    staging = tmp_path_factory.mktemp("staging")
    source = build_example("resnet_18", EXAMPLE_CODE, staging, pretrained=False)
    check_model_dir(source)
    archive = pack(source, staging / "resnet_18.tar.gz")
    target = models_root / "resnet_18" / "model"
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target
