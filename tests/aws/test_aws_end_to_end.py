"""End to end, as a user would: package, models add, deploy, then invoke the local endpoint.

moto plays S3 and the SageMaker control plane; `mme endpoint`, pointed at the prefix that
deploy registered, plays the runtime that moto lacks. The same `mme invoke` line would go
to AWS without --endpoint-url.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from harness.endpoint import Endpoint, base_env
from mme.aws.session import Client
from tests.aws.aws_cli import deploy_args, run_mme, text

pytestmark = pytest.mark.server

EXAMPLE = "resnet_18"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ResNet-18 example archive, built by `mme package` (random weights: offline)."""
    out = tmp_path_factory.mktemp("packaged")
    packed = run_mme("package", EXAMPLE, "--output-dir", str(out))
    assert packed.returncode == 0, text(packed.stderr) + text(packed.stdout)
    return out / f"{EXAMPLE}.tar.gz"


@pytest.fixture
def deployed(
    moto_url: str, sagemaker: Client, bucket: str, endpoint_name: str, packaged: Path
) -> Iterator[str]:
    """The archive added under a prefix and an endpoint deployed on it; yields the prefix."""
    prefix = f"s3://{bucket}/team-a/"
    added = run_mme("models", "add", prefix, str(packaged), "--name", "resnet-18-v1.tar.gz",
                    "--endpoint-url", moto_url)  # fmt: skip
    assert added.returncode == 0, text(added.stderr)
    deploy = run_mme(*deploy_args(endpoint_name, moto_url, prefix))
    assert deploy.returncode == 0, text(deploy.stderr)
    yield prefix
    assert run_mme("teardown", endpoint_name, "--endpoint-url", moto_url).returncode == 0


@pytest.fixture
def local_endpoint(
    moto_url: str, sagemaker: Client, endpoint_name: str, deployed: str, tmp_path: Path
) -> Iterator[Endpoint]:
    """`mme endpoint` serving the ModelDataUrl that deploy gave the SageMaker model."""
    described = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    model_data_url = model["PrimaryContainer"]["ModelDataUrl"]
    assert model_data_url == deployed
    server = Endpoint(
        endpoint_name,
        ["--model-data-url", model_data_url, "--s3-endpoint-url", moto_url,
         "--cache-dir", str(tmp_path / "cache")],
        tmp_path / "endpoint.log",
    )  # fmt: skip
    server.start(base_env())
    try:
        yield server
    finally:
        server.stop()


def _jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())
    return path


def test_invoke_through_the_local_endpoint_like_on_aws(
    local_endpoint: Endpoint, endpoint_name: str, tmp_path: Path
) -> None:
    image = _jpeg(tmp_path / "photo.jpg")
    invoke = ["invoke", endpoint_name, "--endpoint-url", local_endpoint.url,
              "--target-model", "resnet-18-v1.tar.gz", "--body", str(image)]  # fmt: skip

    answered = run_mme(*invoke, "--content-type", "image/jpeg", "--accept", "application/json")
    refused = run_mme(*invoke, "--content-type", "text/plain")

    assert answered.returncode == 0, text(answered.stderr) + local_endpoint.log()[-3000:]
    top = json.loads(answered.stdout)
    assert len(top) == 5
    assert all(set(entry) == {"probability", "class"} for entry in top)
    assert refused.returncode == 1
    assert "OriginalStatusCode=415" in text(refused.stderr)
    assert "send an image" in text(refused.stderr)
