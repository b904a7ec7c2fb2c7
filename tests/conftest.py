"""Options shared by every test tier."""

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
