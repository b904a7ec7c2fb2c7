"""Remove an endpoint and everything deploy and autoscale made for it; safe to repeat.

Only what deploy made for this very endpoint goes: the endpoint must carry deploy's
``mme:endpoint`` tag with its name, and so must each config and model (see `ownership`).
Order matters on AWS: the scaling policy and target go first (they point at the variant),
then the endpoint, then the configs and models it ran on. The S3 models stay: they are data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from mme.aws.autoscaling import remove_autoscaling
from mme.aws.errors import NotOwnedError, WaitTimeoutError
from mme.aws.ownership import TAG_KEY, Report, made_for, remove_owned
from mme.aws.resources import deleted, describe_endpoint
from mme.aws.session import Client


@dataclass
class TeardownResult:
    """What was deleted, by kind."""

    autoscaling: list[str] = field(default_factory=list)
    endpoint: str | None = None
    configs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    @property
    def nothing_found(self) -> bool:
        """True when there was nothing left to delete."""
        return not (self.autoscaling or self.endpoint or self.configs or self.models)


def teardown(
    sagemaker: Client,
    autoscaling: Client,
    endpoint: str,
    timeout_s: float = 1800,
    poll_s: float = 15,
    report: Report = print,
) -> TeardownResult:
    """Delete the endpoint's scaling, the endpoint, and the configs and models deploy made.

    Raises NotOwnedError, deleting nothing, for an endpoint that deploy did not make.
    """
    description = describe_endpoint(sagemaker, endpoint)
    if description is not None:
        _check_owned(sagemaker, endpoint, description)
    result = TeardownResult()
    result.autoscaling = remove_autoscaling(autoscaling, endpoint)
    for line in result.autoscaling:
        report(f"deleted {line}")
    if description is not None and deleted(
        partial(sagemaker.delete_endpoint, EndpointName=endpoint)
    ):
        result.endpoint = endpoint
        report(f"deleting endpoint {endpoint}")
        _wait_deleted(sagemaker, endpoint, timeout_s, poll_s)
        report(f"deleted endpoint {endpoint}")
    # Configs and models that deploy made for this endpoint may outlive it (an update that
    # was not waited for, an endpoint deleted by hand): find them by their tag.
    removed = remove_owned(sagemaker, endpoint, report)
    result.configs, result.models = removed.configs, removed.models
    return result


def _check_owned(sagemaker: Client, endpoint: str, description: dict[str, Any]) -> None:
    owner = made_for(sagemaker, description["EndpointArn"])
    if owner != endpoint:
        tag = f"its {TAG_KEY} tag says {owner!r}" if owner else f"it has no {TAG_KEY} tag"
        raise NotOwnedError(
            f"endpoint {endpoint} was not made by `mme deploy` ({tag}); teardown deletes only "
            "what deploy made, so nothing was deleted. Delete it with `aws sagemaker "
            f"delete-endpoint --endpoint-name {endpoint}`, and its config and model likewise."
        )


def _wait_deleted(sagemaker: Client, endpoint: str, timeout_s: float, poll_s: float) -> None:
    # Deleting an endpoint takes minutes on AWS; wait (bounded) so that a deploy that follows
    # does not find it still Deleting.
    deadline = time.monotonic() + timeout_s
    while describe_endpoint(sagemaker, endpoint) is not None:
        if time.monotonic() + poll_s > deadline:
            raise WaitTimeoutError(
                f"endpoint {endpoint} is still being deleted after {timeout_s:.0f}s; "
                "run teardown again later to finish"
            )
        time.sleep(poll_s)
