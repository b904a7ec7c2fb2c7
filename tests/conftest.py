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
