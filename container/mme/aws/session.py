"""boto3 clients for the deploy commands, aimed by --region, --profile and --endpoint-url.

boto3 reads its own AWS_* variables (credentials, AWS_REGION, AWS_PROFILE,
AWS_ENDPOINT_URL_<SERVICE>), so nothing here reads the environment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

# boto3 builds its clients at run time and no type stubs are installed: a client is Any.
Client = Any

# The `mme` command logs to stdout, and `mme invoke` writes the response body there: keep
# botocore's INFO chatter ("Found credentials in environment variables.") out of it.
QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3")


@dataclass(frozen=True)
class AwsTarget:
    """Where the clients go: region, named profile and an optional endpoint URL."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None

    def client(self, service: str, config: Config | None = None) -> Client:
        """A boto3 client for ``service`` (e.g. "sagemaker", "s3") aimed at this target."""
        session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        return session.client(service, endpoint_url=self.endpoint_url, config=config)


def quiet_aws_loggers() -> None:
    """Keep boto3's own log lines at WARNING and above."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
