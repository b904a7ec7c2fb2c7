"""Real model folders for tests, laid out exactly as SageMaker extracts model.tar.gz."""

from __future__ import annotations

import io
import textwrap
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LINEAR_WEIGHT = [[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]
LINEAR_BIAS = [0.5, -0.5]


def expected_linear(rows: list[list[float]]) -> list[list[float]]:
    """What the linear test model answers for ``rows``, computed without torch."""
    weight, bias = np.array(LINEAR_WEIGHT), np.array(LINEAR_BIAS)
    return (np.array(rows) @ weight.T + bias).tolist()


def save_linear_model(path: Path) -> Path:
    """A TorchScript ``y = xW^T + b`` with known weights, saved at ``path``."""
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(LINEAR_WEIGHT))
        layer.bias.copy_(torch.tensor(LINEAR_BIAS))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is what we serve
        torch.jit.save(torch.jit.script(layer), str(path))
    return path


def make_model_dir(root: Path, name: str, code: dict[str, str] | None = None,
                   weights: bool = True) -> Path:
    """``root/<name>/model`` with the linear model.pt (optional) and ``code/`` files."""
    model_dir = root / name / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    if weights:
        save_linear_model(model_dir / "model.pt")
    for filename, source in (code or {}).items():
        target = model_dir / "code" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))
    return model_dir


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    """A JPEG of random pixels."""
    pixels = (np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()
