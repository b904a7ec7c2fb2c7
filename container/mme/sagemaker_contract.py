"""SageMaker's rules for a multi-model endpoint, in one place: its limits, formats and codes.

SageMaker refuses what breaks these rules: InvokeEndpoint (the runtime), CreateModel and
CreateEndpointConfig (the control plane), and S3, where the archive of a call is the
ModelDataUrl prefix and the TargetModel joined as plain strings. The local endpoint
(:mod:`mme.endpoint`) enforces them as SageMaker does; the deploy tools (:mod:`mme.aws`)
check them before they call AWS. The values come from botocore's service models
(``sagemaker-runtime`` 2017-05-13, ``sagemaker`` 2017-07-24) and AWS's guide to
multi-model endpoints.

The checks return why a value is refused (None when it is fine), so that each caller
raises its own error in its own words: a 400 ValidationError at the endpoint, a UsageError
in the command line.
"""

from __future__ import annotations

import re

# ----- InvokeEndpoint

MAX_INVOKE_BODY_BYTES = 6 * 1024 * 1024  # Body: 6291456 bytes; botocore does not check it
MAX_TARGET_MODEL_CHARS = 1024
ARCHIVE_SUFFIX = ".tar.gz"  # TargetModel: [relative path/]<artifact name>.tar.gz

# ----- names of endpoints, models and endpoint configs

MAX_NAME_CHARS = 63
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")

# ----- S3: ModelDataUrl (the prefix) and the archives under it

S3_SCHEME = "s3://"
MAX_MODEL_DATA_URL_CHARS = 1024
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# What S3 (and S3-compatible stores) answer for an object that is not there; HeadObject
# has no body, so only the status is left ("404").
S3_MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
S3_MISSING_BUCKET_CODE = "NoSuchBucket"
S3_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden"})

# ----- CreateModel: the container definition

MAX_ENV_ENTRIES = 100
MAX_ENV_CHARS = 1024  # of a name, and of a value
ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MODEL_CACHE_SETTINGS = ("Enabled", "Disabled")  # MultiModelConfig.ModelCacheSetting
# ContainerMetricsConfig: the publish intervals and the pattern of the path scraped.
METRICS_FREQUENCIES_S = (10, 30, 60, 120, 180, 240, 300)
METRICS_PATH = re.compile(r"^/(?!.*\.\.)[a-zA-Z0-9/_.\-]{1,255}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/\S+$")  # ExecutionRoleArn

# ----- CreateEndpointConfig: the production variant

INSTANCE_TYPE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
VOLUME_SIZE_GB = (1, 512)  # VolumeSizeInGB, inclusive
STARTUP_HEALTH_CHECK_S = (60, 3600)  # ContainerStartupHealthCheckTimeoutInSeconds, inclusive


def is_valid_name(name: str) -> bool:
    """Whether SageMaker takes ``name`` for an endpoint, model or endpoint config."""
    return len(name) <= MAX_NAME_CHARS and NAME_PATTERN.match(name) is not None


def target_model_problem(target_model: str) -> str | None:
    """Why InvokeEndpoint refuses ``target_model`` as a TargetModel; None if it takes it.

    botocore's rule is 1 to 1024 characters matching ``\\A\\S[\\p{Print}]*\\z``.
    """
    if (
        not 0 < len(target_model) <= MAX_TARGET_MODEL_CHARS
        or target_model[0].isspace()
        or not target_model.isprintable()
    ):
        return (
            f"must be 1 to {MAX_TARGET_MODEL_CHARS} printable characters and must not "
            "start with a space"
        )
    return None


def target_model_key_problem(target_model: str) -> str | None:
    """Why ``target_model`` names another object than the path it reads as; None if not.

    The archive's key is the prefix and the TargetModel joined as plain strings, and S3
    keeps a key as it is: ``/a.tar.gz``, ``./a.tar.gz`` and ``sub/../a.tar.gz`` are keys of
    their own, not ``a.tar.gz``. A folder would resolve them, to a file inside the prefix
    or outside it, so such a name is refused wherever a TargetModel becomes a path.
    """
    if target_model.startswith("/"):
        return "starts with '/'; a TargetModel is a path relative to the ModelDataUrl prefix"
    if {"", ".", ".."} & set(target_model.split("/")):
        return "has an empty, '.' or '..' part; S3 would take it for another key"
    return None


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key), as plain strings: the key keeps its slashes.

    The bucket is "" when the URL names none; raises ValueError for a URL that is not s3://.
    """
    if not url.startswith(S3_SCHEME):
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    return bucket, key


def s3_error_code(exc: Exception) -> str:
    """The error code of a botocore ClientError from S3 ("" for any other exception)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
