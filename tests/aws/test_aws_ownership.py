"""Teardown and update delete only what deploy made for the one endpoint, whatever the names.

deploy names models and configs `<endpoint cut to 51 characters>-<10 hex>`, so endpoints
whose names share those 51 characters produce look-alike names, and a hand-made resource can
look the same too. Every endpoint below collides with the others in one of the ways a
63-character SageMaker name allows; tearing down any one of them must take its own endpoint,
config and model and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mme.aws.deployment import Deployment, DeploySpec, deploy
from mme.aws.session import Client
from mme.aws.teardown import teardown
from tests.aws.aws_cli import IMAGE, ROLE, run_mme, text

NAME_BASE_CHARS = 51  # what deploy keeps of an endpoint name before `-<hash>`
HAND_MADE = "0123456789"  # a hand-made resource named like deploy's `<base>-<hash>`

Resource = tuple[str, str]  # (kind, name)


def _quiet(_: str) -> None:
    pass


def _colliding_names(base: str) -> list[str]:
    assert len(base) == NAME_BASE_CHARS and base[-1] != "-"
    return [
        f"{base}-prod",  # the report: two 56-character names with the same 51 first
        f"{base}-test",
        f"{base}-{'p' * 11}",  # 63 characters, the longest name ...
        f"{base}-{'p' * 10}q",  # ... and one that differs only in its last character
        base,  # exactly the others' cut name
        f"{base}--x",  # cut to `<base>-`, whose trailing hyphen is dropped: `<base>` again
        f"{base}-{'a' * 10}",  # itself shaped like `<base>-<hash>`
        f"{base}x",  # longer by one character, so a prefix of nothing above but the base
    ]


def _snapshot(sagemaker: Client, stem: str) -> set[Resource]:
    listings = [
        ("endpoint", "list_endpoints", "Endpoints", "EndpointName"),
        ("endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName"),
        ("model", "list_models", "Models", "ModelName"),
    ]
    found = set()
    for kind, operation, key, name in listings:
        for page in sagemaker.get_paginator(operation).paginate():
            found.update((kind, item[name]) for item in page[key] if item[name].startswith(stem))
    return found


def _own(result: Deployment) -> set[Resource]:
    return {
        ("endpoint", result.endpoint_name),
        ("endpoint config", result.config_name),
        ("model", result.model_name),
    }


def _hand_made(sagemaker: Client, base: str, bucket: str) -> tuple[str, set[Resource]]:
    """An endpoint that deploy never made, on a config and model named like deploy's."""
    endpoint, name = f"{base}-hand", f"{base}-{HAND_MADE}"
    container = {"Image": IMAGE, "Mode": "MultiModel", "ModelDataUrl": f"s3://{bucket}/"}
    sagemaker.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=ROLE)
    variant = {"VariantName": "AllTraffic", "ModelName": name,
               "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=name)
    return endpoint, {("endpoint", endpoint), ("endpoint config", name), ("model", name)}


@pytest.fixture
def stem(sagemaker: Client) -> Iterator[str]:
    """A prefix of this test's names; whatever carries it is removed afterwards."""
    prefix = f"c{uuid.uuid4().hex[:8]}"
    yield prefix
    for kind, name in sorted(_snapshot(sagemaker, prefix)):
        if kind == "endpoint":
            sagemaker.delete_endpoint(EndpointName=name)
        elif kind == "endpoint config":
            sagemaker.delete_endpoint_config(EndpointConfigName=name)
        else:
            sagemaker.delete_model(ModelName=name)


def test_teardown_of_each_colliding_endpoint_takes_its_own_resources_only(
    sagemaker: Client, autoscaling: Client, bucket: str, stem: str
) -> None:
    base = f"{stem}-recommendation-service-multi-model-eu".ljust(NAME_BASE_CHARS, "z")
    deployed = {
        name: deploy(sagemaker, DeploySpec(name, IMAGE, f"s3://{bucket}/", ROLE), report=_quiet)
        for name in _colliding_names(base)
    }
    hand_made = _hand_made(sagemaker, base, bucket)[1]
    assert _snapshot(sagemaker, stem) == hand_made.union(*(_own(d) for d in deployed.values()))

    for name, result in deployed.items():
        before = _snapshot(sagemaker, stem)

        teardown(sagemaker, autoscaling, name, poll_s=0, report=_quiet)

        assert before - _snapshot(sagemaker, stem) == _own(result), name
    assert _snapshot(sagemaker, stem) == hand_made


def test_update_removes_only_the_pair_it_replaced(
    sagemaker: Client, bucket: str, stem: str
) -> None:
    base = stem.ljust(NAME_BASE_CHARS, "u")
    first, neighbour = f"{base}-prod", f"{base}-test"
    old = deploy(sagemaker, DeploySpec(first, IMAGE, f"s3://{bucket}/", ROLE), report=_quiet)
    other = deploy(sagemaker, DeploySpec(neighbour, IMAGE, f"s3://{bucket}/", ROLE), report=_quiet)
    hand_made = _hand_made(sagemaker, base, bucket)[1]

    new = deploy(
        sagemaker, DeploySpec(first, IMAGE, f"s3://{bucket}/v2/", ROLE), update=True,
        poll_s=0, report=_quiet,
    )  # fmt: skip

    assert new.action == "updated"
    assert _snapshot(sagemaker, stem) == _own(new) | _own(other) | hand_made
    assert old.config_name != new.config_name and old.model_name != new.model_name


def test_teardown_refuses_an_endpoint_that_deploy_did_not_make(
    moto_url: str, sagemaker: Client, bucket: str, stem: str
) -> None:
    base = stem.ljust(NAME_BASE_CHARS, "h")
    endpoint, hand_made = _hand_made(sagemaker, base, bucket)

    refused = run_mme("teardown", endpoint, "--endpoint-url", moto_url, "--poll-interval", "0")

    err = text(refused.stderr)
    assert refused.returncode == 1, err
    assert err.startswith(f"mme teardown: error: endpoint {endpoint} was not made by `mme deploy`")
    assert "nothing was deleted" in err and err.count("\n") == 1
    assert _snapshot(sagemaker, stem) == hand_made
