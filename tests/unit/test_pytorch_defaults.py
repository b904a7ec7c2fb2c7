import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mme.errors import (
    BadRequestError,
    ModelLoadError,
    NotAcceptableError,
    UnsupportedContentTypeError,
)
from mme.model_code import find_model_file
from mme.pytorch_defaults import PytorchDefaults, device_for
from tests.fakes import FakeContext
from tests.model_builders import expected_linear, make_model_dir, save_linear_model

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
