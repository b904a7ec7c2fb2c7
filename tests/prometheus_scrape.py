"""Moved to harness.prometheus; tests/endpoint still imports these from here."""

from harness.prometheus import scrape, totals, value

__all__ = ["scrape", "totals", "value"]
