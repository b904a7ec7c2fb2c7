"""The per-model installer, with real pip and hand-built wheels, in this process.

Every install here is offline: wheels come from the model's ``code/lib/``, and the
one test that needs pip to hang points it at a loopback socket that never answers.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models import make_model_dir
from mme.model_requirements import (
    COMPLETE_MARKER,
    TEMP_PREFIX,
    RequirementsError,
    activate_requirements,
    install_requirements,
    requirements_key,
)
from tests.requirements.private_index import private_index
from tests.requirements.wheels import PACKAGE, build_wheel, ship_requirements

pytestmark = pytest.mark.usefixtures("restore_import_state")

TIMEOUT_S = 60


def model_with(
    tmp_path: Path, name: str, requirements: str, versions: tuple[str, ...] = ()
) -> Path:
    model_dir = make_model_dir(tmp_path / "models", name, {"inference.py": ""}, weights=False)
    ship_requirements(model_dir, requirements, versions)
    return model_dir


def importable_by_a_fresh_interpreter(module: str) -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return probe.returncode == 0


def test_a_shipped_wheel_installs_and_imports_after_the_models_code(tmp_path: Path) -> None:
    model_dir = model_with(tmp_path, "a", f"{PACKAGE}==1.0\n", ("1.0",))
    root = tmp_path / "deps"
    code_dir = str(model_dir / "code")
    sys.path.insert(0, code_dir)  # as activate_code_dir leaves it

    target = activate_requirements(str(model_dir), str(root), TIMEOUT_S)

    assert target == str(root / requirements_key(code_dir))
    assert sys.path[:2] == [code_dir, target]
    assert (Path(target) / COMPLETE_MARKER).is_file()
    module = __import__(PACKAGE)
    assert module.VERSION == "1.0"
    assert module.__file__.startswith(target + os.sep)
    assert not importable_by_a_fresh_interpreter(PACKAGE)  # the environment is untouched
    assert sorted(os.listdir(root)) == sorted([Path(target).name, f"{Path(target).name}.lock"])


def test_identical_requirements_share_one_folder_and_a_reload_reuses_it(tmp_path: Path) -> None:
    root = str(tmp_path / "deps")
    first = install_requirements(
        str(model_with(tmp_path, "a", f"{PACKAGE}\n", ("1.0",))), root, TIMEOUT_S
    )
    assert first is not None
    inode = os.stat(first).st_ino
    twin = install_requirements(
        str(model_with(tmp_path, "b", f"{PACKAGE}\n", ("1.0",))), root, TIMEOUT_S
    )
    again = install_requirements(str(tmp_path / "models" / "a" / "model"), root, TIMEOUT_S)
    assert first == twin == again
    assert os.stat(first).st_ino == inode  # not installed again (a rename makes a new inode)


def test_another_version_of_the_same_package_gets_its_own_folder(tmp_path: Path) -> None:
    root = str(tmp_path / "deps")
    one = install_requirements(
        str(model_with(tmp_path, "a", f"{PACKAGE}\n", ("1.0",))), root, TIMEOUT_S
    )
    two = install_requirements(
        str(model_with(tmp_path, "b", f"{PACKAGE}\n", ("2.0",))), root, TIMEOUT_S
    )
    assert one is not None and two is not None and one != two
    for folder, version in ((one, "1.0"), (two, "2.0")):
        assert (Path(folder) / PACKAGE / "__init__.py").read_text() == f"VERSION = {version!r}\n"


def installed_distributions(folder: str) -> list[str]:
    return sorted(
        entry.removesuffix(".dist-info")
        for entry in os.listdir(folder)
        if entry.endswith(".dist-info")
    )


def test_what_the_servers_environment_has_is_not_installed_again(tmp_path: Path) -> None:
    # Offline, a dependency that is not in code/lib/ can only come from the environment.
    model_dir = model_with(tmp_path, "a", f"{PACKAGE}==1.0\n")
    build_wheel(model_dir / "code" / "lib", "1.0", requires=("torch", "psutil>=1"))
    target = install_requirements(str(model_dir), str(tmp_path / "deps"), TIMEOUT_S)
    assert target is not None
    assert installed_distributions(target) == [f"{PACKAGE}-1.0"]
    assert not (Path(target) / "torch").exists()


def test_requirements_the_environment_meets_install_nothing_and_need_no_index(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens there
    model_dir = model_with(tmp_path, "a", "torch\npsutil>=1\n")
    target = install_requirements(str(model_dir), str(tmp_path / "deps"), TIMEOUT_S)
    assert target is not None
    assert sorted(os.listdir(target)) == [COMPLETE_MARKER]


def test_a_version_the_environment_lacks_is_installed_for_the_model_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # pytest, and so this process, has imported iniconfig (2.x) from the environment.
    model_dir = model_with(tmp_path, "a", "iniconfig==0.0.1\n")
    build_wheel(model_dir / "code" / "lib", "0.0.1", name="iniconfig")
    sys.path.insert(0, str(model_dir / "code"))
    target = activate_requirements(str(model_dir), str(tmp_path / "deps"), TIMEOUT_S)
    assert target is not None
    assert installed_distributions(target) == ["iniconfig-0.0.1"]
    assert "installs iniconfig, which this worker has imported already" in caplog.text


def test_the_index_settings_of_requirements_txt_hold_for_the_install_too(tmp_path: Path) -> None:
    with private_index(tmp_path / "index", PACKAGE, "3.0") as index:
        host = index.split("/")[2]
        model_dir = model_with(
            tmp_path, "a", f"--index-url {index}\n--trusted-host {host}\n{PACKAGE}==3.0\n"
        )
        target = install_requirements(str(model_dir), str(tmp_path / "deps"), TIMEOUT_S)
    assert target is not None
    assert installed_distributions(target) == [f"{PACKAGE}-3.0"]


def test_a_broken_requirement_fails_with_the_end_of_pips_output(tmp_path: Path) -> None:
    model_dir = model_with(tmp_path, "bad", "mme-no-such-package==9.9\n", ("1.0",))
    root = tmp_path / "deps"
    with pytest.raises(RequirementsError) as error:
        install_requirements(str(model_dir), str(root), TIMEOUT_S)
    first_line, *tail = error.value.message.splitlines()
    assert first_line.endswith("failed to install (pip exited with 1); the end of pip's output:")
    assert "No matching distribution found for mme-no-such-package==9.9" in tail[-1]
    assert [entry for entry in os.listdir(root) if not entry.endswith(".lock")] == []


def test_a_model_without_requirements_changes_nothing(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "plain", {"inference.py": ""}, weights=False)
    before = list(sys.path)
    assert activate_requirements(str(model_dir), str(tmp_path / "deps"), TIMEOUT_S) is None
    assert sys.path == before
    assert not (tmp_path / "deps").exists()


def test_a_killed_installs_leftovers_are_never_trusted(tmp_path: Path) -> None:
    model_dir = model_with(tmp_path, "a", f"{PACKAGE}\n", ("1.0",))
    root = tmp_path / "deps"
    key = requirements_key(str(model_dir / "code"))
    leftover = root / f"{TEMP_PREFIX}{key}-dead"
    (leftover / PACKAGE).mkdir(parents=True)  # as a SIGKILLed pip leaves it
    half = root / key
    half.mkdir()  # a folder without the marker: never complete
    target = install_requirements(str(model_dir), str(root), TIMEOUT_S)
    assert target == str(half)
    assert (half / COMPLETE_MARKER).is_file()
    assert (half / PACKAGE / "__init__.py").is_file()
    assert not leftover.exists()


def test_a_second_installer_waits_for_the_lock_and_gives_up_in_time(tmp_path: Path) -> None:
    model_dir = model_with(tmp_path, "a", f"{PACKAGE}\n", ("1.0",))
    root = tmp_path / "deps"
    root.mkdir()
    key = requirements_key(str(model_dir / "code"))
    with open(root / f"{key}.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another worker is installing
        with pytest.raises(RequirementsError, match="another worker"):
            install_requirements(str(model_dir), str(root), 1)
    assert not (root / key).exists()
    assert install_requirements(str(model_dir), str(root), TIMEOUT_S) == str(root / key)


def test_an_install_that_hangs_is_killed_at_the_time_limit(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        model_dir = model_with(tmp_path, "slow", f"--no-index\n--find-links {index}\n{PACKAGE}\n")
        with pytest.raises(RequirementsError, match="did not install within 2 s"):
            install_requirements(str(model_dir), str(tmp_path / "deps"), 2)
    assert [e for e in os.listdir(tmp_path / "deps") if not e.endswith(".lock")] == []


def test_an_unwritable_folder_fails_the_load_naming_the_setting(tmp_path: Path) -> None:
    model_dir = model_with(tmp_path, "a", f"{PACKAGE}\n", ("1.0",))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RequirementsError, match="MME_REQUIREMENTS_DIR"):
        install_requirements(str(model_dir), str(blocker / "deps"), TIMEOUT_S)
