"""The physical floor: the model's own decode, preprocess, forward and postprocess, in-process."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mme.settings import Settings


class InProcess:
    """The model's own functions, called in this process: what serving adds nothing to."""

    def __init__(self, model_dir: Path, body: bytes, content_type: str) -> None:
        # The thread count a worker gets by default (MME_NUM_THREADS), so that the only
        # difference from a served request is the serving itself.
        torch.set_num_threads(Settings.from_env().num_threads)
        self._code = _user_module(model_dir / "code" / "inference.py")
        self._model = self._code.model_fn(str(model_dir))
        self._body, self._content_type = body, content_type

    def once(self) -> float:
        """Decode, preprocess, forward and postprocess once; the seconds it took."""
        started = time.monotonic()
        prediction = self._code.predict_fn(self._code.input_fn(self._body, self._content_type),
                                           self._model)
        self._code.output_fn(prediction, "application/json")
        return time.monotonic() - started


def _user_module(path: Path) -> Any:
    sys.path.insert(0, os.fspath(path.parent))
    spec = importlib.util.spec_from_file_location("bench_floor_inference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
