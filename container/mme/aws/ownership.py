"""What `mme deploy` made for an endpoint, told apart from everything else, and its removal.

deploy names each model and endpoint config ``<endpoint name cut to fit>-<hash>`` and tags
them, and the endpoint, ``mme:endpoint=<endpoint name>``. Cut names of two endpoints can be
equal (``...-eu-team-prod`` and ``...-eu-team-test``), and a resource made by hand can look
the same, so a name only makes a resource a candidate: the tag, which holds the whole
endpoint name, decides. Nothing without that tag is ever deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from botocore.exceptions import ClientError

from mme.aws.resources import config_models, deleted, describe_endpoint_config, is_not_found
from mme.aws.session import Client
from mme.sagemaker_contract import MAX_NAME_CHARS

TAG_KEY = "mme:endpoint"
HASH_CHARS = 10

Report = Callable[[str], None]


@dataclass(frozen=True)
class Kind:
    """How SageMaker lists, names and deletes one kind of resource."""

    label: str
    cli_delete: str  # the AWS CLI command that deletes one by name
    list_operation: str
    list_key: str
    name_key: str
    arn_key: str
    delete_operation: str


CONFIGS = Kind(
    "endpoint config",
    "aws sagemaker delete-endpoint-config --endpoint-config-name",
    "list_endpoint_configs",
    "EndpointConfigs",
    "EndpointConfigName",
    "EndpointConfigArn",
    "delete_endpoint_config",
)
MODELS = Kind(
    "model",
    "aws sagemaker delete-model --model-name",
    "list_models",
    "Models",
    "ModelName",
    "ModelArn",
    "delete_model",
)


@dataclass
class Removed:
    """The names of the configs and models that were deleted."""

    configs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def tags(endpoint: str) -> list[dict[str, str]]:
    """The tags deploy puts on everything it makes for ``endpoint``."""
    return [{"Key": TAG_KEY, "Value": endpoint}]


def name_base(endpoint: str) -> str:
    """The endpoint name cut so that ``<base>-<hash>`` fits SageMaker's 63 characters."""
    return endpoint[: MAX_NAME_CHARS - HASH_CHARS - 1].rstrip("-")


def owned_name(endpoint: str) -> re.Pattern[str]:
    """Matches the names deploy gives the models and configs of ``endpoint`` (and look-alikes)."""
    return re.compile(rf"^{re.escape(name_base(endpoint))}-[0-9a-f]{{{HASH_CHARS}}}$")


def made_for(sagemaker: Client, arn: str) -> str | None:
    """The endpoint whose deploy made the resource at ``arn`` (its tag), or None."""
    try:
        for page in sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn):
            for tag in page.get("Tags", []):
                if tag["Key"] == TAG_KEY:
                    return str(tag["Value"])
    except ClientError as exc:
        if is_not_found(exc):  # deleted meanwhile: nobody's any more
            return None
        raise
    return None


def owned(sagemaker: Client, endpoint: str, kind: Kind) -> list[str]:
    """The names of the ``kind`` resources that deploy made for ``endpoint``, by their tag."""
    pattern = owned_name(endpoint)
    names = []
    pages = sagemaker.get_paginator(kind.list_operation).paginate(NameContains=name_base(endpoint))
    for page in pages:
        for item in page.get(kind.list_key, []):
            name = item[kind.name_key]
            if pattern.match(name) and made_for(sagemaker, item[kind.arn_key]) == endpoint:
                names.append(name)
    return sorted(names)


def remove_owned(
    sagemaker: Client,
    endpoint: str,
    report: Report,
    keep_config: str | None = None,
    verb: str = "deleted",
) -> Removed:
    """Delete the configs and models deploy made for ``endpoint``, but ``keep_config``'s."""
    kept_models: set[str] = set()
    if keep_config is not None:
        kept_models.update(config_models(describe_endpoint_config(sagemaker, keep_config)))
    removed = Removed()
    for config in owned(sagemaker, endpoint, CONFIGS):
        if config != keep_config and delete(sagemaker, CONFIGS, config):
            removed.configs.append(config)
            report(f"{verb} endpoint config {config}")
    for model in owned(sagemaker, endpoint, MODELS):
        if model not in kept_models and delete(sagemaker, MODELS, model):
            removed.models.append(model)
            report(f"{verb} model {model}")
    return removed


def delete(sagemaker: Client, kind: Kind, name: str) -> bool:
    """Delete the ``kind`` resource ``name``; False when it was already gone."""
    return deleted(partial(getattr(sagemaker, kind.delete_operation), **{kind.name_key: name}))
