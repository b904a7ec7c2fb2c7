"""Small real TorchScript models for the optimiser's tests, and model folders that hold them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

SAMPLE_INPUT_FILE = "sample_input.npy"  # what users write: the README names it
IMAGE_SHAPE = (1, 3, 12, 12)


class ConvNet(torch.nn.Module):
    """A tiny ResNet-like stack: convolutions and batch norms, which freezing folds."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(8, 5)
        with torch.no_grad():  # batch norms with statistics, as after training
            for layer in self.features:
                if isinstance(layer, torch.nn.BatchNorm2d):
                    layer.running_mean.uniform_(-0.5, 0.5)
                    layer.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Mlp(torch.nn.Module):
    """No image weights, and a public method besides forward that user code may call."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 16)
        self.out = torch.nn.Linear(16, 3)

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x))


class FoldSensitive(torch.nn.Module):
    """A convolution whose bias and batch-norm mean cancel: folding them changes the outputs.

    Unfolded, the convolution's outputs are rounded near 1e6 (steps of 0.0625) before the
    mean is taken away; folded, the two cancel exactly first. The outputs differ by percents.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        with torch.no_grad():
            self.conv.bias.fill_(1e6)
            self.norm.running_mean.fill_(1e6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)).flatten(1).sum(1, keepdim=True)


class Noisy(torch.nn.Module):
    """Outputs that change from run to run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


def image_sample(seed: int = 0) -> torch.Tensor:
    """An input for ConvNet and FoldSensitive."""
    return torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(seed))


def save_scripted(module: torch.nn.Module, path: Path) -> Path:
    """``module`` in eval mode as TorchScript at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is what we optimise
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def folder_with_sample(root: Path, module: torch.nn.Module, sample: np.ndarray) -> Path:
    """A model folder for the default loader: ``model.pt`` and ``code/sample_input.npy``."""
    save_scripted(module, root / "model.pt")
    (root / "code").mkdir()
    np.save(root / "code" / SAMPLE_INPUT_FILE, sample)
    return root
