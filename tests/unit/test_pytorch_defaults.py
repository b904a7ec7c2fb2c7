import importlib
import io
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.models import (
    LINEAR_BIAS,
    LINEAR_WEIGHT,
    expected_linear,
    make_model_dir,
    save_linear_model,
)
from mme.errors import (
    BadRequestError,
    ModelLoadError,
    NotAcceptableError,
    UnsupportedContentTypeError,
)
from mme.model_code import activate_code_dir, find_model_file
from mme.packaging import EXAMPLE_CODE
from mme.pytorch_defaults import PytorchDefaults, device_for
from tests.fakes import FakeContext

defaults = PytorchDefaults()


def test_loads_torchscript_in_eval_mode_and_predicts(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m")
    model = defaults.default_model_fn(str(model_dir))
    assert not model.training
    data = defaults.default_input_fn("[[1, 2, 3]]", "application/json")
    assert data.dtype == torch.float32
    prediction = defaults.default_predict_fn(data, model)
    body, content_type = defaults.default_output_fn(prediction, "application/json")
    assert content_type == "application/json"
    assert np.allclose(json.loads(body), expected_linear([[1, 2, 3]]))


class LinearWithDropout(torch.nn.Module):
    """The linear test model, with a dropout that only training mode applies."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)
        self.dropout = torch.nn.Dropout(0.5)
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor(LINEAR_WEIGHT))
            self.layer.bias.copy_(torch.tensor(LINEAR_BIAS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer(x))


def save_exported(path: Path, training: bool = False) -> Path:
    """The linear test model as a torch.export program (``torch.export.save``)."""
    module = LinearWithDropout().train(training)
    batch = torch.export.Dim("batch")  # any batch size, not only the example's
    program = torch.export.export(module, (torch.randn(2, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def test_serves_a_torch_export_program(tmp_path: Path) -> None:
    save_exported(tmp_path / "classifier.pt2")  # the one model file, under any name

    model = defaults.default_model_fn(str(tmp_path))

    data = defaults.default_input_fn("[[1, 2, 3], [0, 0, 1]]", "application/json")
    body, _ = defaults.default_output_fn(
        defaults.default_predict_fn(data, model), "application/json"
    )
    assert np.allclose(json.loads(body), expected_linear([[1, 2, 3], [0, 0, 1]]))


def test_a_program_exported_in_training_mode_is_refused_with_advice(tmp_path: Path) -> None:
    save_exported(tmp_path / "model.pt2", training=True)
    with pytest.raises(ModelLoadError, match=r"exported in training mode \(aten\.dropout"):
        defaults.default_model_fn(str(tmp_path))


def test_a_torchscript_file_named_pt2_is_refused_with_advice(tmp_path: Path) -> None:
    save_linear_model(tmp_path / "model.pt2")
    with pytest.raises(ModelLoadError, match=r"not a torch\.export program"):
        defaults.default_model_fn(str(tmp_path))


@pytest.mark.usefixtures("restore_import_state")
@pytest.mark.parametrize("loader", ["default, TorchScript", "default, torch.export", "example"])
def test_a_load_warns_nothing(tmp_path: Path, loader: str) -> None:
    if loader == "default, torch.export":
        save_exported(tmp_path / "model.pt2")
    else:
        save_linear_model(tmp_path / "model.pt")
    load: Callable[[str], Any] = defaults.default_model_fn
    if loader == "example":  # its model_fn, imported as the worker imports it
        shutil.copytree(EXAMPLE_CODE, tmp_path / "code")
        activate_code_dir(str(tmp_path))
        load = importlib.import_module("inference").model_fn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(str(tmp_path))

    assert [str(w.message) for w in caught] == []


def test_only_the_torchscript_deprecation_is_silenced() -> None:
    from mme.pytorch_defaults import torchscript_deprecation_silenced  # new: fails alone if absent

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torchscript_deprecation_silenced():
            warnings.warn(
                "`torch.jit.load` is deprecated. Please switch to `torch.export`.",
                FutureWarning,
                stacklevel=1,
            )
            warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)

    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_the_one_pt_or_pth_file_is_found(tmp_path: Path) -> None:
    save_linear_model(tmp_path / "weights.pth")
    assert find_model_file(str(tmp_path)) == str(tmp_path / "weights.pth")
    save_linear_model(tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="exactly one"):
        find_model_file(str(tmp_path))


def test_a_state_dict_is_refused_with_advice(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="not a TorchScript model"):
        defaults.default_model_fn(str(tmp_path))


def test_csv_and_npy_inputs_and_outputs() -> None:
    from_csv = defaults.default_input_fn("1,2,3\n4,5,6", "text/csv")
    assert from_csv.shape == (2, 3)
    buffer = io.BytesIO()
    np.save(buffer, np.array([[1, 2]], dtype=np.int64))
    from_npy = defaults.default_input_fn(buffer.getvalue(), "application/x-npy")
    assert from_npy.dtype == torch.int64  # NPY keeps its dtype
    body, content_type = defaults.default_output_fn(torch.tensor([[1.5, 2.5]]), "text/csv")
    assert (body.strip(), content_type) == ("1.5,2.5", "text/csv")
    body, content_type = defaults.default_output_fn(torch.tensor([1.0]), "application/x-npy")
    assert content_type == "application/x-npy"
    assert np.load(io.BytesIO(body)).tolist() == [1.0]


def test_accept_picks_the_first_supported_type() -> None:
    _, content_type = defaults.default_output_fn(torch.tensor([1.0]), "image/png, text/csv")
    assert content_type == "text/csv"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: defaults.default_input_fn("x", "text/plain"), UnsupportedContentTypeError),
        (lambda: defaults.default_input_fn("[[1, 2", "application/json"), BadRequestError),
        (lambda: defaults.default_input_fn('{"a": 1}', "application/json"), BadRequestError),
        (lambda: defaults.default_input_fn("[[1], [2, 3]]", "application/json"), BadRequestError),
        (lambda: defaults.default_output_fn(torch.tensor([1.0]), "image/png"), NotAcceptableError),
    ],
)
def test_bad_input_gets_its_own_error(call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()  # type: ignore[operator]


def test_device_comes_from_the_context() -> None:
    assert device_for(FakeContext("/m")).type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device_for(FakeContext("/m", gpu_id=0)).type == expected
