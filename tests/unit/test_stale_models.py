"""The stale-model sweeper against an HTTP server that answers as MMS 1.1.11 does.

The states it plays were seen in MMS's own log (tests/faults): a model that a new LOAD
has just registered is listed without workers for a few milliseconds before its worker
appears; the registration left by a failed LOAD stays without workers for good.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mme.stale_models import MARKER_DIR, StaleModelSweeper, report_failed_load
from tests.http_threads import JSONHandler, LoopbackHTTPServer, serving

CONFIRM_S = 0.3
WORKER = {"id": "9001", "status": "READY"}


class ScriptedModels(LoopbackHTTPServer):
    """``GET /models/<name>`` answers from ``listed`` (absent: 404); DELETEs are recorded."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.listed: dict[str, list[dict[str, str]]] = {}
        self.deleted: list[str] = []


class _Handler(JSONHandler):
    server: ScriptedModels

    def do_GET(self) -> None:
        name = self.path.removeprefix("/models/")
        if name not in self.server.listed:
            self.answer(404, {"code": 404, "message": f"Model not found: {name}"})
        else:
            self.answer(200, [{"modelName": name, "workers": self.server.listed[name]}])

    def do_DELETE(self) -> None:
        name = self.path.removeprefix("/models/")
        self.server.deleted.append(name)
        self.server.listed.pop(name, None)
        self.answer(200, {"status": f'Model "{name}" unregistered'})


@pytest.fixture
def mms() -> Iterator[ScriptedModels]:
    with serving(ScriptedModels()) as server:
        yield server


def sweeper_for(mms: ScriptedModels, temp_dir: Path) -> StaleModelSweeper:
    return StaleModelSweeper(mms.url, str(temp_dir), confirm_s=CONFIRM_S)


def markers(temp_dir: Path) -> list[str]:
    return sorted(path.name for path in (temp_dir / MARKER_DIR).iterdir())


def test_a_registration_left_without_workers_is_unregistered_once_confirmed(
    mms: ScriptedModels, tmp_path: Path,
) -> None:
    mms.listed["m"] = []
    report_failed_load(str(tmp_path), "m")
    sweeper = sweeper_for(mms, tmp_path)
    sweeper.sweep_once()
    assert mms.deleted == []  # seen once: it may be a LOAD about to start its worker
    assert markers(tmp_path) == ["m"]
    time.sleep(CONFIRM_S)
    sweeper.sweep_once()
    assert mms.deleted == ["m"]
    assert markers(tmp_path) == []


def test_a_new_load_of_the_same_name_is_left_alone(mms: ScriptedModels, tmp_path: Path) -> None:
    # The marker of the failed LOAD arrives as the model is LOADed again.
    report_failed_load(str(tmp_path), "m")
    mms.listed["m"] = []  # registered, its worker not started yet
    sweeper = sweeper_for(mms, tmp_path)
    sweeper.sweep_once()
    mms.listed["m"] = [WORKER]
    time.sleep(CONFIRM_S)
    sweeper.sweep_once()
    sweeper.sweep_once()
    assert mms.deleted == []
    assert "m" in mms.listed


def test_workers_seen_in_between_restart_the_confirmation(
    mms: ScriptedModels, tmp_path: Path,
) -> None:
    report_failed_load(str(tmp_path), "m")
    sweeper = sweeper_for(mms, tmp_path)
    mms.listed["m"] = []
    sweeper.sweep_once()
    mms.listed["m"] = [WORKER]
    time.sleep(CONFIRM_S)
    sweeper.sweep_once()
    mms.listed["m"] = []  # that worker failed too: a fresh stale registration
    sweeper.sweep_once()
    assert mms.deleted == []
    time.sleep(CONFIRM_S)
    sweeper.sweep_once()
    assert mms.deleted == ["m"]


def test_a_model_mms_unregistered_itself_only_loses_its_marker(
    mms: ScriptedModels, tmp_path: Path,
) -> None:
    report_failed_load(str(tmp_path), "a b/c")  # any name: the marker's file name is quoted
    sweeper = sweeper_for(mms, tmp_path)
    sweeper.sweep_once()
    time.sleep(CONFIRM_S)
    sweeper.sweep_once()
    assert mms.deleted == []
    assert markers(tmp_path) == []


def test_a_404_that_mms_takes_back_is_not_trusted(mms: ScriptedModels, tmp_path: Path) -> None:
    # MMS's unregister drops the model from its table, then puts it back when its
    # clean-up is interrupted (seen after an out-of-memory LOAD).
    report_failed_load(str(tmp_path), "m")
    sweeper = sweeper_for(mms, tmp_path)
    sweeper.sweep_once()  # 404
    mms.listed["m"] = []
    sweeper.sweep_once()
    assert markers(tmp_path) == ["m"]
    time.sleep(CONFIRM_S)
    sweeper.sweep_once()
    assert mms.deleted == ["m"]
    assert markers(tmp_path) == []
