"""Fixtures for unit tests that import model code in the test process."""

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_import_state() -> Iterator[None]:
    """Undo every change a test makes to ``sys.path`` and ``sys.modules``."""
    path, modules = list(sys.path), dict(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - set(modules):
        del sys.modules[name]
    sys.modules.update(modules)
