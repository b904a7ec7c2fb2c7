from pathlib import Path

import pytest
import torch

from mme.artifact_optimizer import Mismatch, largest_difference, optimize
from mme.pytorch_defaults import load_model
from tests.unit.torchscript_models import (
    ConvNet,
    FoldSensitive,
    Mlp,
    Noisy,
    image_sample,
    save_scripted,
)


def _answers(model_file: Path, data: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return load_model(str(model_file))(data)


@pytest.mark.parametrize(
    ("module", "sample", "winner"),
    [
        (ConvNet(), image_sample(), "frozen TorchScript with channels-last weights"),
        (Mlp(), torch.randn(2, 4), "frozen TorchScript"),  # no image weights to reorder
    ],
)
def test_the_optimised_copy_answers_as_the_original(
    tmp_path: Path, module: torch.nn.Module, sample: torch.Tensor, winner: str
) -> None:
    original = save_scripted(module, tmp_path / "model.pt")

    optimization = optimize(original, (sample,), tmp_path)

    assert optimization.artifact is not None, optimization.note
    assert f"optimised: {winner}," in optimization.note
    assert optimization.replacements == {"model.pt": optimization.artifact}
    optimised = load_model(str(optimization.artifact))
    assert not list(optimised.parameters())  # frozen: the weights are constants of the graph
    other_input = torch.randn_like(sample)  # not only the sample it was checked on
    for data in (sample, other_input):
        largest_difference(_answers(original, data), _answers(optimization.artifact, data))


def test_the_module_s_other_public_methods_survive(tmp_path: Path) -> None:
    original = save_scripted(Mlp(), tmp_path / "model.pt")
    data = torch.randn(2, 4)

    optimization = optimize(original, (data,), tmp_path)

    assert optimization.artifact is not None, optimization.note
    with torch.inference_mode():
        expected = load_model(str(original)).embed(data)
        largest_difference(expected, load_model(str(optimization.artifact)).embed(data))


@pytest.mark.parametrize(
    ("module", "sample", "says"),
    [
        (FoldSensitive(), image_sample(), "no optimised copy answers as it does"),
        (ConvNet(), torch.randn(1, 5, 12, 12), "the sample input does not run through it"),
        (Noisy(), torch.randn(2, 3), "its outputs change from run to run"),
    ],
)
def test_the_original_stays_when_no_copy_is_proven(
    tmp_path: Path, module: torch.nn.Module, sample: torch.Tensor, says: str
) -> None:
    original = save_scripted(module, tmp_path / "model.pt")

    optimization = optimize(original, (sample,), tmp_path)

    assert optimization.artifact is None
    assert optimization.replacements == {}
    assert says in optimization.note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no rejected copy left


def test_a_state_dict_is_left_alone(tmp_path: Path) -> None:
    torch.save(Mlp().state_dict(), tmp_path / "model.pt")  # for the user's own model_fn

    optimization = optimize(tmp_path / "model.pt", (torch.randn(2, 4),), tmp_path)

    assert optimization.artifact is None
    assert "not a TorchScript model" in optimization.note


@pytest.mark.parametrize(
    ("reference", "output"),
    [
        (torch.tensor([1.0, 100.0]), torch.tensor([1.0, 100.0 + 2e-3])),  # 1e-4 of 100 is 1e-2
        (
            (torch.tensor([1, 2]), {"p": torch.tensor([0.5])}),
            (torch.tensor([1, 2]), {"p": torch.tensor([0.5 + 1e-6])}),
        ),
        (
            torch.tensor([1.0], dtype=torch.bfloat16),
            torch.tensor([1.0078125], dtype=torch.bfloat16),
        ),  # one bfloat16 step
    ],
)
def test_differences_within_the_tolerance_pass(reference: object, output: object) -> None:
    assert largest_difference(reference, output) < 1e-2


@pytest.mark.parametrize(
    ("reference", "output", "says"),
    [
        (torch.tensor([1.0, 100.0]), torch.tensor([1.01, 100.0]), "differs by up to 0.0001 of"),
        (torch.tensor([1, 2]), torch.tensor([1, 3]), "differs"),
        (torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64), "float64"),
        ((torch.tensor([1.0]),), (torch.tensor([1.0]), torch.tensor([2.0])), "a sequence of 1"),
        ({"p": torch.tensor([1.0])}, {"q": torch.tensor([1.0])}, "keys"),
    ],
)
def test_differences_beyond_the_tolerance_are_named(
    reference: object, output: object, says: str
) -> None:
    with pytest.raises(Mismatch, match=says):
        largest_difference(reference, output)
