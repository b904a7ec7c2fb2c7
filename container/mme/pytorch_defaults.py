"""PyTorch defaults for the inference functions that a model's ``inference.py`` leaves out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.export.passes
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
from mme.model_code import EXPORTED_PROGRAM_SUFFIX, find_model_file

ARRAY_TYPES = (content_types.JSON, content_types.CSV, content_types.NPY)
# torch's FutureWarning for every torch.jit function ("`torch.jit.load` is deprecated. ...").
TORCHSCRIPT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


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


@contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    """Inside the block, hide torch's warning that TorchScript is deprecated; nothing else.

    A worker loads its model once per LOAD, so the warning would be logged at every LOAD of
    every model, telling the operator nothing they can act on: TorchScript is still the
    format that SageMaker's PyTorch defaults load, and the one our packager optimises. Only
    that one message is filtered, and only here: any other warning, including the same one
    from the user's own code outside this block, still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATION, category=FutureWarning)
        yield


def _training_mode_ops(program: Any) -> list[str]:
    """The ops of an exported program that were captured in training mode (dropout, batch norm)."""
    found = []
    for node in program.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None:
            continue
        for index, argument in enumerate(schema.arguments):
            if argument.name in ("train", "training"):
                value = (
                    node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
                )
                if value is True:
                    found.append(str(node.target))
    return sorted(set(found))


def _load_exported_program(path: str, device: torch.device) -> Any:
    program = torch.export.load(path)
    # An exported program keeps the mode it was exported in (its module refuses eval()), so a
    # program exported in training mode would drop out and normalise with batch statistics.
    in_training = _training_mode_ops(program)
    if in_training:
        raise ModelLoadError(
            f"{os.path.basename(path)} was exported in training mode ({', '.join(in_training)} "
            "act as in training): call model.eval() before torch.export.export"
        )
    if device.type != "cpu":
        program = torch.export.passes.move_to_device_pass(program, device)
    return program.module()


def load_model(path: str, device: torch.device | str = "cpu") -> Any:
    """Load a TorchScript file, or a ``.pt2`` torch.export program, onto ``device`` for inference.

    TorchScript comes back in eval mode; an exported program as it was exported (it must
    have been exported in eval mode). Raises ModelLoadError for anything else, such as a
    pickled state_dict, with advice.
    """
    target = torch.device(device)
    exported = path.endswith(EXPORTED_PROGRAM_SUFFIX)
    try:
        if exported:
            return _load_exported_program(path, target)
        with torchscript_deprecation_silenced():
            return torch.jit.load(path, map_location=target).eval()
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise
        expected = (
            "a torch.export program; save it with torch.export.save"
            if exported
            else "a TorchScript model; save it with torch.jit.save"
        )
        raise ModelLoadError(
            f"{os.path.basename(path)} is not {expected}, or ship code/inference.py with a "
            "model_fn that loads it"
        ) from exc


class PytorchDefaults(DefaultInferenceHandler):
    """TorchScript or torch.export loading, array codecs and ``inference_mode`` prediction."""

    def default_model_fn(self, model_dir: str, context: Any = None) -> Any:
        """Load ``model.pt`` (TorchScript) or ``model.pt2`` (torch.export) onto the device."""
        return load_model(find_model_file(model_dir), device_for(context))

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
