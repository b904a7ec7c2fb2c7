"""boto3 clients for the deploy commands, aimed by --region, --profile and --endpoint-url.

boto3 reads its own AWS_* variables (credentials, AWS_REGION, AWS_PROFILE,
AWS_ENDPOINT_URL_<SERVICE>), so nothing here reads the environment.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

# boto3 builds its clients at run time and no type stubs are installed: a client is Any.
Client = Any

# The `mme` command logs to stdout, and `mme invoke` writes the response body there: keep
# botocore's INFO chatter ("Found credentials in environment variables.") out of it.
QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3")
LOCAL_REGION = "us-east-1"  # what a local endpoint is called in when no region is set


@dataclass(frozen=True)
class AwsTarget:
    """Where the clients go: region, named profile and an optional endpoint URL."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None

    def client(
        self, service: str, config: Config | None = None, default_region: str | None = None
    ) -> Client:
        """A boto3 client for ``service`` (e.g. "sagemaker", "s3") aimed at this target, in
        ``default_region`` when neither --region nor the AWS configuration names one."""
        session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        return session.client(
            service,
            endpoint_url=self.endpoint_url,
            config=config,
            region_name=session.region_name or default_region,
        )

    def local_runtime(self) -> bool:
        """Whether this target is a local endpoint (`mme endpoint`): a loopback URL. It
        needs no region (any will do there) and no credentials."""
        return is_loopback(self.endpoint_url)


def is_loopback(url: str | None) -> bool:
    """Whether ``url`` points at this host (`mme endpoint`, moto)."""
    host = urlsplit(url or "").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def quiet_aws_loggers() -> None:
    """Keep boto3's own log lines at WARNING and above."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
