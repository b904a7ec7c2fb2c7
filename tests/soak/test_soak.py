"""The soak at its short setting: the same code as `make soak`, for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soak import run
from soak.traffic import BAD_KINDS

pytestmark = pytest.mark.server

# Short and light: CI machines are small and run other suites beside this one.
SHORT = ["--seconds", "45", "--concurrency", "6"]


def test_a_short_soak_has_no_unexpected_outcome_and_leaks_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    said: list[str] = []
    code = run.main(
        [
            *SHORT,
            "--worker-mode",
            request.config.getoption("--worker-mode"),
            "--out",
            str(tmp_path),
        ],
        say=said.append,
    )

    report = "\n".join(said)
    result = json.loads((tmp_path / "results.json").read_text())
    traffic = result["traffic"]
    assert traffic["unexpected"] == 0 and result["warm_up"]["unexpected"] == 0, report
    assert traffic["checked"] == traffic["answers"] > 0
    happened = {row["operation"] for row in traffic["rows"]}
    assert {"invoke", "load", "unload", *BAD_KINDS} <= happened, report
    assert result["endpoint_metrics"]["unloads"] > 0  # --max-loaded-models made it evict
    assert result["leaks"] == [], report
    assert result["left_after_stop"] == []
    assert result["exit_codes"] == {"endpoint": 0, "serve": 0}
    assert code == 0, report
    assert any(line.startswith("[   10 s]") for line in said)  # progress while it ran
    assert (tmp_path / "results.md").read_text().count("PASS") == 1
