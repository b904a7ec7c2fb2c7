"""Options and reporting shared by every test tier."""

from collections.abc import Generator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        choices=("native", "image"),
        default="native",
        help="run tests/container against `mme serve` on this machine (native) or the built "
        "image (image, see `make test-image`)",
    )
    parser.addoption(
        "--worker-mode",
        choices=("prefork", "stock"),
        default="prefork",
        help="MME_WORKER_MODE of the server that tests/container runs against",
    )


LOG_TAIL_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, None]:
    """On a failure, show the end of each server log the test used: CI keeps nothing else."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        log_path = getattr(value, "log_path", None)
        if log_path is not None and log_path.exists():
            lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append(
                (f"server log of {name!r} ({log_path}), last lines", "\n".join(lines))
            )
