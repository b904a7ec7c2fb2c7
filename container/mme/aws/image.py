"""The container image URI, checked the way SageMaker will check it, before anything exists.

deploy creates models with SageMaker's default image access ("Platform"): the image must be
in a private Amazon ECR repository of the endpoint's region, named by tag or by digest.
SageMaker refuses anything else, but only after CreateModel has been called.
"""

from __future__ import annotations

import re

from mme.aws.errors import UsageError

MAX_IMAGE_CHARS = 255
ECR_REGISTRY = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
)
REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
EXAMPLE = "123456789012.dkr.ecr.REGION.amazonaws.com/sagemaker-mme-pytorch:TAG"


def check_image(image: str, region: str | None = None) -> None:
    """Raise UsageError saying why SageMaker would refuse ``image`` (``region``: the endpoint's)."""
    if not image:
        raise UsageError(f"--image is empty: give the ECR image URI, like {EXAMPLE}")
    if len(image) > MAX_IMAGE_CHARS or any(c.isspace() for c in image):
        raise UsageError(
            f"--image {image!r}: SageMaker takes at most {MAX_IMAGE_CHARS} characters, "
            "without spaces"
        )
    registry = ECR_REGISTRY.match(image)
    if registry is None:
        raise UsageError(
            f"--image {image!r} is not in Amazon ECR: SageMaker pulls a model's image only "
            f"from a private ECR repository ({EXAMPLE}); push it with scripts/build_and_push.sh"
        )
    repository, reference = _split_reference(image[registry.end() :])
    if not REPOSITORY.match(repository):
        raise UsageError(
            f"--image {image!r}: {repository!r} is not an ECR repository name (lowercase "
            "letters, digits and . _ - /)"
        )
    if reference is None:
        raise UsageError(
            f"--image {image!r} names no tag: SageMaker refuses an ECR image without :TAG "
            f"or @sha256:DIGEST (e.g. {image}:latest)"
        )
    if not (TAG.match(reference) or DIGEST.match(reference)):
        raise UsageError(f"--image {image!r}: {reference!r} is not a valid tag or digest")
    if region is not None and registry["region"] != region:
        raise UsageError(
            f"--image {image!r} is in {registry['region']}, the endpoint in {region}: "
            "SageMaker pulls images only from ECR in the endpoint's region; push it there "
            f"(scripts/build_and_push.sh --region {region})"
        )


def _split_reference(path: str) -> tuple[str, str | None]:
    """``repo:tag`` or ``repo@sha256:...`` -> (repo, tag or digest); (repo, None) if neither."""
    if "@" in path:
        repository, digest = path.split("@", 1)
        return repository, digest
    repository, colon, tag = path.rpartition(":")
    if colon and "/" not in tag:
        return repository, tag
    return path, None
