"""Moved to harness.servers; tests/endpoint/processes.py still imports these from here."""

from harness.servers import terminate, wait_for_ping

__all__ = ["terminate", "wait_for_ping"]
