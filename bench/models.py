"""The benchmark's model folders, laid out as SageMaker extracts model.tar.gz."""

from __future__ import annotations

import shutil
import tarfile
import textwrap
from pathlib import Path

import torch
import torchvision

from mme.packaging import EXAMPLES, build_example, example_sample_input, package

EXAMPLE_CODE = Path(__file__).resolve().parents[1] / "code" / "image_classifier"
# TorchScript optimises a model's graph during its first runs: calls before measuring.
TORCHSCRIPT_WARM_UP_CALLS = 3

# The example's code, imported under another name by a model_fn that loads a state_dict:
# the same pre- and post-processing as the TorchScript variant.
STATE_DICT_INFERENCE = """
import os

import torch
import torchvision

from image_classifier import MAX_BATCH_SIZE, input_fn, output_fn, predict_fn

__all__ = ["MAX_BATCH_SIZE", "input_fn", "model_fn", "output_fn", "predict_fn"]


def model_fn(model_dir):
    network = torchvision.models.{builder}(weights=None)
    state = torch.load(os.path.join(model_dir, "model.pth"), map_location="cpu",
                       weights_only=True)
    network.load_state_dict(state)
    return network.eval()
"""

NOOP_INFERENCE = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return body, content_type
"""


def torchscript_model(name: str, staging: Path, target: Path) -> Path:
    """The example ``name`` (resnet_18, resnet_152) as `mme package` packs it (its verified,
    optimised TorchScript ``model.pt`` + code/), extracted as SageMaker does."""
    source = build_example(name, EXAMPLE_CODE, staging, pretrained=False)
    archive, _ = package(source, staging, sample=example_sample_input())
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def state_dict_model(name: str, target: Path) -> Path:
    """The example's network as a state_dict ``model.pth``, built by code/inference.py."""
    builder = EXAMPLES[name]
    code = target / "code"
    shutil.copytree(EXAMPLE_CODE, code)
    (code / "inference.py").rename(code / "image_classifier.py")
    (code / "inference.py").write_text(
        textwrap.dedent(STATE_DICT_INFERENCE.format(builder=builder))
    )
    network = getattr(torchvision.models, builder)(weights=None)
    torch.save(network.state_dict(), target / "model.pth")
    return target


def noop_model(target: Path) -> Path:
    """A model whose worker answers with the request body: the serving stack's own cost."""
    (target / "code").mkdir(parents=True)
    (target / "code" / "inference.py").write_text(NOOP_INFERENCE)
    return target
