"""Moved to harness.models; tests/endpoint/test_local_endpoint.py still imports this from here."""

from harness.models import jpeg_bytes

__all__ = ["jpeg_bytes"]
