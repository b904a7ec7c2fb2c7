"""The local endpoint's /metrics per model, with the labels that the container's carry."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from harness.endpoint import ContainerProcess
from harness.prometheus import scrape, value
from tests.endpoint.test_local_endpoint import (  # the fixture, imported to be used here
    MakeEndpoint,
    _invoke,
    _model_id,
    make_endpoint,  # noqa: F401
)

pytestmark = pytest.mark.server


def test_each_model_has_its_series_labelled_as_in_the_container(
    make_endpoint: MakeEndpoint,  # noqa: F811
    container: ContainerProcess,
) -> None:
    endpoint = make_endpoint(["a.tar.gz", "b.tar.gz", "predict-fails.tar.gz"])
    for target in ("a.tar.gz", "a.tar.gz", "b.tar.gz"):
        _invoke(endpoint, target)
    for target in ("predict-fails.tar.gz", "missing.tar.gz"):
        with pytest.raises(ClientError):
            _invoke(endpoint, target)
    ids = {
        target: _model_id(endpoint, target)
        for target in ("a.tar.gz", "b.tar.gz", "predict-fails.tar.gz")
    }

    samples = scrape(endpoint.url)
    container_samples = scrape(container.url)

    for target, calls in (("a.tar.gz", 2), ("b.tar.gz", 1), ("predict-fails.tar.gz", 1)):
        labels = {"target_model": target, "model_name": ids[target]}
        assert value(samples, "Invocations_total", **labels) == calls
        assert value(samples, "ModelLatency_count", **labels) == calls
        assert value(samples, "ModelLoadingTime_count", **labels) == 1
        assert value(samples, "ModelDownloadingTime_count", **labels) == 1
        # The container learnt the same TargetModel from the endpoint's header.
        assert value(container_samples, "mme_model_requests_total", **labels) == calls
    failing = {"target_model": "predict-fails.tar.gz", "model_name": ids["predict-fails.tar.gz"]}
    assert value(samples, "Invocation5XXErrors_sum", **failing) == 1
    assert value(container_samples, "mme_model_errors_total", **failing) == 1
    # A call that reached no model counts under empty labels, never under the client's name.
    assert value(samples, "Invocations_total", target_model="", model_name="") == 1
    assert not [s for s in samples if s.labels.get("target_model") == "missing.tar.gz"]
    assert value(samples, "LoadedModelCount") == 3
