import os
import stat
import tarfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.models import make_model_dir
from mme.cli import main
from mme.packaging import PackagingError, check_model_dir, pack
from tests.requirements.wheels import PACKAGE, ship_requirements
from tests.unit.torchscript_models import ConvNet, FoldSensitive, folder_with_sample, image_sample

GOOD_CODE = {
    "inference.py": "from helpers import scale\ndef model_fn(model_dir):\n    return scale\n",
    "helpers.py": "scale = 2\n",
}


def test_a_good_folder_packs_with_its_contents_at_the_root(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "good", GOOD_CODE)
    check_model_dir(model_dir)
    archive = pack(model_dir, tmp_path / "out" / "good.tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"model.pt", "code", "code/inference.py", "code/helpers.py"} <= names
    assert not any(name.startswith("/") or ".." in name for name in names)
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix == ".partial"]


@pytest.mark.parametrize(
    ("code", "weights", "says"),
    [
        ({"inference.py": "import not_a_module_anywhere\n"}, True, "does not import"),
        ({"inference.py": "def input_fn(a, b):\n    return a\n"}, False, "no model_fn"),
        (
            {
                "inference.py": "def model_fn(d): ...\ndef transform_fn(m, d, c, a): ...\n"
                "def predict_fn(d, m): ...\n"
            },
            True,
            "transform_fn together with",
        ),
    ],
)
def test_code_problems_are_named(
    tmp_path: Path, code: dict[str, str], weights: bool, says: str
) -> None:
    model_dir = make_model_dir(tmp_path, "bad", code, weights)
    with pytest.raises(PackagingError, match=says):
        check_model_dir(model_dir)


def test_links_that_escape_are_refused(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "links", GOOD_CODE)
    os.symlink("/etc/passwd", model_dir / "absolute")
    os.symlink("../../outside", model_dir / "code" / "relative")
    with pytest.raises(PackagingError) as error:
        check_model_dir(model_dir)
    assert "absolute: a link to an absolute path" in str(error.value)
    assert "code/relative: a link that leaves the model folder" in str(error.value)


def test_the_command_reports_problems_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = make_model_dir(tmp_path, "good", GOOD_CODE)
    bad = make_model_dir(tmp_path, "bad", {"inference.py": "syntax error here\n"})
    code = main(["package", str(good), str(bad), "-o", str(tmp_path / "dist")])
    captured = capsys.readouterr()
    assert code == 1
    assert "does not import" in captured.err
    assert (tmp_path / "dist" / "model.tar.gz").exists()  # the good one, named after its folder
    assert "model.pt packed as it is: no code/sample_input.npy" in captured.out


def _model_with_requirements(tmp_path: Path, requirement: str) -> Path:
    """A model whose code imports the package that its code/requirements.txt names."""
    code = {
        "inference.py": f"import {PACKAGE}\ndef model_fn(model_dir):\n"
        f"    return {PACKAGE}.VERSION\n"
    }
    model_dir = make_model_dir(tmp_path, "with-deps", code)
    ship_requirements(model_dir, f"{requirement}\n", versions=("1.0",))
    return model_dir


def test_code_that_imports_its_own_requirements_packs(tmp_path: Path) -> None:
    model_dir = _model_with_requirements(tmp_path, f"{PACKAGE}==1.0")

    check_model_dir(model_dir)  # installed offline from code/lib/ for the check

    with tarfile.open(pack(model_dir, tmp_path / "out" / "m.tar.gz")) as tar:
        names = tar.getnames()
    assert "code/requirements.txt" in names
    assert not [name for name in names if PACKAGE in name and not name.startswith("code/lib/")]


def test_requirements_that_do_not_install_are_named(tmp_path: Path) -> None:
    model_dir = _model_with_requirements(tmp_path, f"{PACKAGE}==9.9")  # code/lib/ has 1.0

    with pytest.raises(PackagingError, match=r"requirements\.txt failed to install"):
        check_model_dir(model_dir)


def test_archives_get_the_usual_file_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        archive = pack(make_model_dir(tmp_path, "good", GOOD_CODE), tmp_path / "m.tar.gz")
    finally:
        os.umask(umask)

    assert stat.S_IMODE(archive.stat().st_mode) == 0o644


def test_the_examples_pack_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository's root

    code = main(["package", "resnet_18", "-o", str(tmp_path / "dist")])

    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "dist" / "resnet_18.tar.gz").is_file()
    assert "resnet_18: model.pt optimised: frozen TorchScript" in capsys.readouterr().out


def _load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path)).eval()


def _packed_model(archive: Path, target: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extract("model.pt", target, filter="data")
    return target / "model.pt"


def test_the_archive_holds_the_verified_optimised_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = folder_with_sample(tmp_path / "convnet", ConvNet(), image_sample().numpy())
    original = (model_dir / "model.pt").read_bytes()

    assert main(["package", str(model_dir), "-o", str(tmp_path / "dist")]) == 0

    assert "convnet: model.pt optimised: frozen TorchScript" in capsys.readouterr().out
    packed = _load(_packed_model(tmp_path / "dist" / "convnet.tar.gz", tmp_path))
    assert not list(packed.parameters())  # frozen
    plain = _load(model_dir / "model.pt")
    with torch.inference_mode():
        for data in (image_sample(), image_sample(seed=1)):  # the README's tolerance
            torch.testing.assert_close(packed(data), plain(data), rtol=1e-4, atol=1e-5)
    assert (model_dir / "model.pt").read_bytes() == original  # the folder is never changed


@pytest.mark.parametrize(
    ("module", "sample", "says"),
    [
        (FoldSensitive(), image_sample(), "no optimised copy answers as it does"),
        (ConvNet(), image_sample().double(), "the sample input does not run through it"),
    ],
)
def test_the_archive_keeps_the_original_when_the_check_fails(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    module: torch.nn.Module,
    sample: torch.Tensor,
    says: str,
) -> None:
    model_dir = folder_with_sample(tmp_path / "m", module, sample.numpy())

    assert main(["package", str(model_dir), "-o", str(tmp_path / "dist")]) == 0

    assert f"m: model.pt packed as it is: {says}" in capsys.readouterr().out
    packed = _packed_model(tmp_path / "dist" / "m.tar.gz", tmp_path)
    assert packed.read_bytes() == (model_dir / "model.pt").read_bytes()


def test_no_optimize_packs_the_model_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = folder_with_sample(tmp_path / "m", ConvNet(), image_sample().numpy())

    assert main(["package", str(model_dir), "--no-optimize", "-o", str(tmp_path / "dist")]) == 0

    assert "optimised" not in capsys.readouterr().out
    packed = _packed_model(tmp_path / "dist" / "m.tar.gz", tmp_path)
    assert packed.read_bytes() == (model_dir / "model.pt").read_bytes()
