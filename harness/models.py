"""Real model folders for tests and tools, laid out exactly as SageMaker extracts model.tar.gz."""

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


def save_linear(path: Path, weight: list[list[float]], bias: list[float]) -> Path:
    """A TorchScript ``y = xW^T + b`` with these weights, saved at ``path``."""
    layer = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is what we serve
        torch.jit.save(torch.jit.script(layer), str(path))
    return path


def save_linear_model(path: Path) -> Path:
    """The linear test model (known weights, see :func:`expected_linear`) at ``path``."""
    return save_linear(path, LINEAR_WEIGHT, LINEAR_BIAS)


# A model per scale, each with its own answer: ``y = scale * (x0 + x1)``.
SCALED_INPUT = [[1.0, 2.0]]


def scaled_model(folder: Path, scale: float, code: str | None = None) -> Path:
    """``folder`` with model.pt: ``y = scale * (x0 + x1)``, and ``code/inference.py`` if
    given."""
    save_linear(folder / "model.pt", [[scale, scale]], [0.0])
    if code is not None:
        (folder / "code").mkdir(exist_ok=True)
        (folder / "code" / "inference.py").write_text(textwrap.dedent(code))
    return folder


def scaled_output(scale: float) -> list[list[float]]:
    """What :func:`scaled_model` answers to :data:`SCALED_INPUT`."""
    return [[scale * sum(SCALED_INPUT[0])]]


def make_model_dir(
    root: Path, name: str, code: dict[str, str] | None = None, weights: bool = True
) -> Path:
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


# A tiny model as thousands of them would be served: a 16x4 torch.nn.Linear saved as a
# state_dict, with the inference.py that builds it; it answers with its name and its output.
TINY_INFERENCE = """
import json, os
import torch

def model_fn(model_dir):
    layer = torch.nn.Linear(16, 4)
    layer.load_state_dict(torch.load(os.path.join(model_dir, "model.pth")))
    return layer.eval()

def transform_fn(model, body, content_type, accept, context):
    with torch.inference_mode():
        output = model(torch.tensor(json.loads(body), dtype=torch.float32))
    return json.dumps({"model": context.model_name, "output": output.tolist()}), accept
"""
TINY_WEIGHT = [[0.25 * (row - col) for col in range(16)] for row in range(4)]
TINY_BIAS = [1.0, -1.0, 0.5, 0.0]


def make_tiny_model(model_dir: Path) -> Path:
    """``model_dir`` with the tiny model (known weights, see :func:`expected_tiny`)."""
    layer = torch.nn.Linear(16, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(TINY_WEIGHT))
        layer.bias.copy_(torch.tensor(TINY_BIAS))
    (model_dir / "code").mkdir(parents=True, exist_ok=True)
    torch.save(layer.state_dict(), model_dir / "model.pth")
    (model_dir / "code" / "inference.py").write_text(TINY_INFERENCE)
    return model_dir


def expected_tiny(rows: list[list[float]]) -> list[list[float]]:
    """What the tiny model answers for ``rows``, computed without torch."""
    return (np.array(rows) @ np.array(TINY_WEIGHT).T + np.array(TINY_BIAS)).tolist()
