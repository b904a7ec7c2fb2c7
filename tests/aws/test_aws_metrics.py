"""`mme deploy` asks SageMaker to scrape the container's metrics, or not (--no-metrics).

moto takes ContainerMetricsConfig and MetricsConfig without keeping them, so the tests read
what the real boto3 client sends: a botocore event hook on each client that `mme deploy`
builds records the request bodies on their way to the moto server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mme import cli
from mme.aws.session import AwsTarget, Client
from tests.aws.aws_cli import deploy_args, run_mme, text

Sent = dict[str, list[dict[str, Any]]]  # operation -> request bodies, in order


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
    """The SageMaker requests of the `mme` commands run in this process, by operation."""
    bodies: Sent = {}
    make_client = AwsTarget.client

    def record(request: Any, **_: Any) -> None:
        operation = request.headers["X-Amz-Target"].decode().split(".")[-1]
        bodies.setdefault(operation, []).append(json.loads(request.body))

    def client(self: AwsTarget, service: str, config: Any = None) -> Client:
        made = make_client(self, service, config)
        made.meta.events.register("before-send.sagemaker", record)
        return made

    monkeypatch.setattr(AwsTarget, "client", client)
    yield bodies


def deploy(moto_url: str, endpoint: str, bucket: str, *extra: str) -> None:
    assert cli.main(deploy_args(endpoint, moto_url, f"s3://{bucket}/", *extra)) == 0


def test_deploy_has_sagemaker_scrape_the_metrics_by_default(
    sent: Sent, moto_url: str, endpoint_name: str, bucket: str
) -> None:
    deploy(moto_url, endpoint_name, bucket)

    [model] = sent["CreateModel"]
    [config] = sent["CreateEndpointConfig"]
    assert model["PrimaryContainer"]["ContainerMetricsConfig"] == {
        "MetricsEndpoints": [
            {"MetricsEndpointPath": "/metrics", "MetricPublishFrequencyInSeconds": 60}
        ]
    }
    assert "MME_METRICS_PATH" not in model["PrimaryContainer"]["Environment"]
    assert config["MetricsConfig"] == {"EnableDetailedObservability": True}


def test_a_path_of_ones_own_is_scraped_and_served(
    sent: Sent, moto_url: str, endpoint_name: str, bucket: str
) -> None:
    deploy(
        moto_url,
        endpoint_name,
        bucket,
        "--metrics-path",
        "/custom/metrics",
        "--metrics-frequency",
        "10",
    )

    [model] = sent["CreateModel"]
    container = model["PrimaryContainer"]
    assert container["ContainerMetricsConfig"] == {
        "MetricsEndpoints": [
            {"MetricsEndpointPath": "/custom/metrics", "MetricPublishFrequencyInSeconds": 10}
        ]
    }
    assert container["Environment"]["MME_METRICS_PATH"] == "/custom/metrics"


def test_no_metrics_turns_detailed_observability_off(
    sent: Sent, moto_url: str, endpoint_name: str, bucket: str
) -> None:
    deploy(moto_url, endpoint_name, bucket, "--no-metrics")

    [model] = sent["CreateModel"]
    [config] = sent["CreateEndpointConfig"]
    assert "ContainerMetricsConfig" not in model["PrimaryContainer"]
    assert config["MetricsConfig"] == {"EnableDetailedObservability": False}


def test_turning_metrics_off_is_a_new_configuration(
    moto_url: str, endpoint_name: str, bucket: str
) -> None:
    first = run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/"))
    again = run_mme(*deploy_args(endpoint_name, moto_url, f"s3://{bucket}/", "--no-metrics"))

    assert first.returncode == 0, text(first.stderr)
    assert again.returncode == 1, text(again.stderr)
    assert "Pass --update" in text(again.stderr)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--metrics-frequency", "15"], "--metrics-frequency must be one of 10, 30, 60"),
        (["--metrics-path", "metrics"], "--metrics-path 'metrics' must be a path"),
        (["--metrics-path", "/ping"], "a path of the container API"),
        (["--no-metrics", "--metrics-path", "/m"], "--no-metrics cannot go with"),
        (["--metrics-path", "/m", "--env", "MME_METRICS_PATH=/n"], "give the path with"),
    ],
)
def test_metrics_options_sagemaker_or_the_container_would_refuse_are_refused_first(
    sent: Sent,
    moto_url: str,
    endpoint_name: str,
    bucket: str,
    options: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(deploy_args(endpoint_name, moto_url, f"s3://{bucket}/", *options))

    assert code == 2
    assert says in capsys.readouterr().err
    assert sent == {}
