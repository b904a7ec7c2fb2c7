"""PyTorch defaults for the inference functions that a model's ``inference.py`` leaves out."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from sagemaker_inference import content_types, decoder, encoder
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.utils import parse_accept

from mme.errors import (
    BadRequestError,
    ModelLoadError,
    NotAcceptableError,
    UnsupportedContentTypeError,
    is_out_of_memory,
)
from mme.model_code import find_model_file

ARRAY_TYPES = (content_types.JSON, content_types.CSV, content_types.NPY)


def device_for(context: Any) -> torch.device:
    """The worker's device: its GPU when MMS assigned one and CUDA works, else the CPU."""
    properties = getattr(context, "system_properties", None) or {}
    gpu_id = properties.get("gpu_id")
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def _as_tensor(array: np.ndarray, content_type: str) -> torch.Tensor:
    if content_type != content_types.NPY:
        # JSON and CSV carry no dtype: numbers become float32, what models take by default.
        # NPY keeps its own dtype, for models that take integers.
        array = array.astype(np.float32)
    return torch.as_tensor(array)


def _as_array(prediction: Any) -> Any:
    if isinstance(prediction, torch.Tensor):
        return prediction.detach().cpu().numpy()
    if isinstance(prediction, (list, tuple)):
        return [_as_array(item) for item in prediction]
    return prediction


class PytorchDefaults(DefaultInferenceHandler):
    """TorchScript loading, array codecs and ``inference_mode`` prediction."""

    def default_model_fn(self, model_dir: str, context: Any = None) -> Any:
        """Load TorchScript ``model.pt`` (or the one .pt/.pth) onto the device, in eval mode."""
        path = find_model_file(model_dir)
        try:
            with warnings.catch_warnings():
                # TorchScript is the format SageMaker's PyTorch defaults load; torch now
                # warns on every use of it.
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(path, map_location=device_for(context))
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise
            raise ModelLoadError(
                f"{os.path.basename(path)} is not a TorchScript model; save it with "
                "torch.jit.save, or ship code/inference.py with a model_fn that loads it"
            ) from exc
        return model.eval()

    def default_input_fn(self, input_data: Any, content_type: str, context: Any = None) -> Any:
        """Decode JSON, CSV or NPY into a tensor on the model's device."""
        if content_type not in ARRAY_TYPES:
            raise UnsupportedContentTypeError(
                f"content type {content_type!r} is not supported; use one of "
                f"{', '.join(ARRAY_TYPES)}"
            )
        try:
            array = decoder.decode(input_data, content_type)
        except Exception as exc:
            raise BadRequestError(f"the body is not valid {content_type}: {exc}") from exc
        try:
            return _as_tensor(array, content_type).to(device_for(context))
        except (TypeError, ValueError) as exc:
            raise BadRequestError(
                f"the {content_type} body is not a rectangular array of numbers"
            ) from exc

    def default_predict_fn(self, data: Any, model: Any, context: Any = None) -> Any:
        """Run the model under ``torch.inference_mode()``."""
        with torch.inference_mode():
            return model(data)

    def default_output_fn(self, prediction: Any, accept: str, context: Any = None) -> Any:
        """Encode the prediction as the first supported type in ``Accept`` (JSON, CSV, NPY)."""
        for content_type in parse_accept(accept):
            if content_type in ARRAY_TYPES:
                return encoder.encode(_as_array(prediction), content_type), content_type
        raise NotAcceptableError(
            f"cannot answer with {accept!r}; accept one of {', '.join(ARRAY_TYPES)}"
        )
