"""Fixtures of the per-model requirements tests."""

from tests.unit.conftest import restore_import_state

__all__ = ["restore_import_state"]
