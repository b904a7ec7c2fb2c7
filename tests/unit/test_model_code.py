import sys
from pathlib import Path

import pytest

from harness.models import make_model_dir
from mme.model_code import activate_code_dir, user_module_path

pytestmark = pytest.mark.usefixtures("restore_import_state")


def test_the_models_code_wins_over_a_same_named_module_elsewhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    (elsewhere / "inference.py").write_text("WHO = 'site-packages'\n")
    sys.path.append(str(elsewhere))
    import inference  # type: ignore[import-not-found]

    assert inference.WHO == "site-packages"
    model_dir = make_model_dir(tmp_path, "a", {"inference.py": "WHO = 'model a'\n"}, weights=False)

    assert activate_code_dir(str(model_dir)) == str(model_dir / "code")
    import inference as reloaded  # type: ignore[import-not-found]

    assert reloaded.WHO == "model a"
    assert sys.path[0] == str(model_dir / "code")


def test_helper_modules_beside_inference_import(tmp_path: Path) -> None:
    model_dir = make_model_dir(
        tmp_path,
        "b",
        {"inference.py": "from utils import VALUE\n", "utils.py": "VALUE = 42\n"},
        weights=False,
    )
    activate_code_dir(str(model_dir))
    import inference  # type: ignore[import-not-found]

    assert inference.VALUE == 42


def test_a_model_without_code_changes_nothing(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "c", weights=False)
    before = list(sys.path)
    assert activate_code_dir(str(model_dir)) is None
    assert sys.path == before
    assert user_module_path(str(model_dir), "inference") is None
