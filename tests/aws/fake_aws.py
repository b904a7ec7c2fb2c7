"""What moto's server lacks for the deploy tests: UpdateEndpoint, and failures on request.

The additions go into moto's own classes for the test session, so they are served over HTTP
to the real boto3 client like everything else moto does; nothing of ours is replaced.

- UpdateEndpoint behaves as SageMaker documents it: the endpoint switches to the new
  config, or (when a test asks) it is refused, or it rolls back: the endpoint stays
  InService on its old config and DescribeEndpoint gives the FailureReason.
- UploadPart can be made to fail for one bucket, as when the credentials expire half-way
  through a large upload; boto3 then aborts the multipart upload.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.s3.exceptions import S3ClientError
from moto.s3.models import S3Backend
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint
from moto.sagemaker.responses import SageMakerResponse


@dataclass
class Faults:
    """Failures that the next matching request meets; each is used up once."""

    refused_updates: dict[str, str] = field(default_factory=dict)  # endpoint -> message
    rolled_back_updates: dict[str, str] = field(default_factory=dict)  # endpoint -> reason
    failing_part_uploads: set[str] = field(default_factory=set)  # bucket names


FAULTS = Faults()


def _update_endpoint(self: SageMakerResponse) -> ActionResult:
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    config_name = self._get_param("EndpointConfigName")
    endpoint: FakeEndpoint | None = backend.endpoints.get(name)
    if endpoint is None:
        arn = FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    config = backend.describe_endpoint_config(config_name)  # "Could not find" if missing
    if endpoint.endpoint_status != "InService":
        raise ValidationError(message=f'Cannot update in-progress endpoint "{endpoint.arn}".')
    if name in FAULTS.refused_updates:
        raise ValidationError(message=FAULTS.refused_updates.pop(name))
    if name in FAULTS.rolled_back_updates:
        endpoint.failure_reason = FAULTS.rolled_back_updates.pop(name)
    else:
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        endpoint.failure_reason = None
    endpoint.last_modified_time = utcnow()
    return ActionResult({"EndpointArn": endpoint.arn})


def _upload_part(original: Any) -> Any:
    def upload_part(self: S3Backend, bucket_name: str, *args: Any, **kwargs: Any) -> Any:
        if bucket_name in FAULTS.failing_part_uploads:
            raise S3ClientError("ExpiredToken", "The provided token has expired.")
        return original(self, bucket_name, *args, **kwargs)

    return upload_part


@contextmanager
def extended_moto() -> Iterator[Faults]:
    """moto's classes with the additions above, for as long as the block runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SageMakerResponse, "update_endpoint", _update_endpoint, raising=False)
        patch.setattr(S3Backend, "upload_part", _upload_part(S3Backend.upload_part))
        yield FAULTS
