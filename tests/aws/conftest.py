"""A moto server on 127.0.0.1 (S3, SageMaker, Application Auto Scaling, IAM) and the `mme` CLI.

The server carries the additions of `tests.aws.fake_aws` (UpdateEndpoint, failures on request).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from mme.aws.session import AwsTarget, Client
from mme.ports import free_port
from tests.aws.aws_cli import REGION
from tests.aws.fake_aws import Faults, extended_moto


@pytest.fixture(scope="session")
def aws_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty AWS config and credentials file, so a developer's ~/.aws cannot leak in."""
    folder = tmp_path_factory.mktemp("aws")
    (folder / "config").write_text("")
    (folder / "credentials").write_text("")
    return folder


@pytest.fixture(scope="session")
def aws_env(aws_files: Path) -> Iterator[dict[str, str]]:
    """Dummy credentials, the region and no metadata lookups, in this process and children."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(aws_files / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_files / "credentials"),
        # Without credentials botocore would ask 169.254.169.254; no traffic but 127.0.0.1.
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    dropped = [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL") or k == "AWS_PROFILE"]
    saved = {k: os.environ.get(k) for k in [*env, *dropped]}
    for key in dropped:
        del os.environ[key]
    os.environ.update(env)
    yield dict(os.environ)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_faults() -> Iterator[Faults]:
    """moto with UpdateEndpoint; tests set its failures through the object yielded."""
    with extended_moto() as faults:
        yield faults


@pytest.fixture(scope="session")
def moto_url(aws_env: dict[str, str], moto_faults: Faults) -> Iterator[str]:
    """The URL of a moto server that plays S3, SageMaker, Application Auto Scaling and IAM."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def target(moto_url: str) -> AwsTarget:
    """Clients aimed at the moto server."""
    return AwsTarget(region=REGION, endpoint_url=moto_url)


@pytest.fixture
def s3(target: AwsTarget) -> Client:
    return target.client("s3")


@pytest.fixture
def sagemaker(target: AwsTarget) -> Client:
    return target.client("sagemaker")


@pytest.fixture
def autoscaling(target: AwsTarget) -> Client:
    return target.client("application-autoscaling")


@pytest.fixture
def bucket(s3: Client) -> str:
    """A new, empty bucket."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def endpoint_name() -> str:
    """A fresh endpoint name, so tests sharing the server do not meet."""
    return f"ep-{uuid.uuid4().hex[:8]}"
