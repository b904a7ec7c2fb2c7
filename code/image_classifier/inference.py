"""Image classifier for the multi-model container: a JPEG or PNG in, the top-5 classes out.

This file is what goes into ``code/inference.py`` of ``resnet_18.tar.gz`` and
``resnet_152.tar.gz`` (see ``mme package resnet_18``). The container calls:

- ``model_fn(model_dir)`` once, when SageMaker loads the model;
- ``input_fn`` -> ``predict_fn`` -> ``output_fn`` for every request. Requests that wait
  for the model at the same time run as one batch (``MAX_BATCH_SIZE``): ``input_fn``
  gives each image as a batch of one, ``predict_fn`` gets several requests' images
  concatenated, and ``output_fn`` gets each request's own rows.

Each function may take a trailing ``context`` argument; see ``input_fn`` for how it
reaches the request's headers.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from sagemaker_inference.utils import parse_accept
from torchvision import transforms

from mme.errors import BadRequestError, NotAcceptableError, UnsupportedContentTypeError
from mme.pytorch_defaults import load_model

IMAGE_TYPES = ("application/x-image", "image/jpeg", "image/png")
TOP_K = 5
MAX_BATCH_SIZE = 8  # requests that wait together run as one predict_fn call
LABELS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")
with open(LABELS_FILE, encoding="utf-8") as _labels:
    LABELS = [line.strip() for line in _labels if line.strip()]

# The ImageNet preprocessing that torchvision's ResNet weights were trained with.
PREPROCESS = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


def model_fn(model_dir: str) -> torch.jit.ScriptModule:
    """Load ``model.pt``: TorchScript, frozen by ``mme package`` when proven equivalent.

    ``load_model`` is the container's own loader: eval mode, and no TorchScript deprecation
    warning logged at every LOAD.
    """
    return load_model(os.path.join(model_dir, "model.pt"))


def input_fn(request_body: bytes, content_type: str, context: Any = None) -> torch.Tensor:
    """Decode a JPEG or PNG into a normalised 1x3x224x224 tensor.

    ``context.request_processor[0].get_request_properties()`` holds the request's
    headers, for example ``X-Amzn-SageMaker-Custom-Attributes``.
    """
    if content_type not in IMAGE_TYPES:
        raise UnsupportedContentTypeError(
            f"send an image ({', '.join(IMAGE_TYPES)}), not {content_type!r}"
        )
    try:
        image = Image.open(io.BytesIO(request_body)).convert("RGB")
    except UnidentifiedImageError as exc:
        # PIL's message names the in-memory file object: nothing the client can use.
        raise BadRequestError("the body is not a JPEG or PNG image") from exc
    except OSError as exc:  # a truncated or corrupt image: PIL's message says which
        raise BadRequestError(f"the body is not a readable JPEG or PNG image: {exc}") from exc
    return PREPROCESS(image).unsqueeze(0)


def predict_fn(batch: torch.Tensor, model: torch.jit.ScriptModule) -> torch.Tensor:
    """The class probabilities of each image in ``batch``, one row per image."""
    with torch.inference_mode():
        return torch.softmax(model(batch), dim=1)


def output_fn(probabilities: torch.Tensor, accept: str) -> tuple[str, str]:
    """The five most probable classes of the request's image, most probable first, as JSON."""
    if not {"application/json", "*/*"} & set(parse_accept(accept)):
        raise NotAcceptableError(f"this model answers application/json, not {accept!r}")
    top = torch.topk(probabilities[0], TOP_K)
    return json.dumps(
        [
            {"probability": round(float(p), 6), "class": LABELS[int(i)]}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
    ), "application/json"
