"""The soak's models: a dozen tiny archives, each with an answer that tells it apart.

Every model is ``y = scale * (x0 + x1)`` with its own scale, so an answer from the wrong
model (or a mix-up between workers) is caught, not just an error. Two of them carry their
own ``code/inference.py``: one answers CSV instead of JSON, one sleeps a little in
``predict_fn`` so that calls overlap on it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.models import SCALED_INPUT, scaled_model, scaled_output
from mme.packaging import pack

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PAYLOAD = json.dumps(SCALED_INPUT).encode()
MALFORMED_PAYLOAD = PAYLOAD[:-2]  # cut off: the default input_fn answers 400

CSV_CODE = """
import json
import os

import torch


def model_fn(model_dir):
    return torch.jit.load(os.path.join(model_dir, "model.pt"))


def transform_fn(model, data, content_type, accept, context):
    with torch.no_grad():
        y = model(torch.tensor(json.loads(data), dtype=torch.float32)).tolist()
    return "\\n".join(",".join(repr(v) for v in row) for row in y), "text/csv"
"""

SLOW_PREDICT_S = 0.2
SLOW_PREDICT_CODE = f"""
import time

import torch


def predict_fn(data, model):
    time.sleep({SLOW_PREDICT_S})
    with torch.no_grad():
        return model(data)
"""


@dataclass(frozen=True)
class ModelSpec:
    """One TargetModel and the answer it must give to :data:`PAYLOAD`."""

    target: str
    scale: float
    accept: str = JSON_TYPE
    code: str | None = None

    @property
    def default_handler(self) -> bool:
        """Whether the container's default input_fn reads its body (so bad JSON is a 400)."""
        return self.code is None or not any(
            name in self.code for name in ("input_fn", "transform_fn")
        )

    def check(self, content_type: str, body: bytes) -> str | None:
        """None if ``body`` is this model's answer, else what is wrong with it."""
        if content_type.split(";")[0].strip() != self.accept:
            return f"content type {content_type!r}, not {self.accept!r}"
        try:
            values = _csv_values(body) if self.accept == CSV_TYPE else json.loads(body)
        except ValueError:
            return f"unreadable body {body[:80]!r}"
        want = scaled_output(self.scale)
        if not _close(values, want):
            return f"answer {body[:80]!r}, not {want}"
        return None


def _csv_values(body: bytes) -> list[list[float]]:
    return [[float(cell) for cell in line.split(",")] for line in body.decode().splitlines()]


def _close(values: object, want: list[list[float]]) -> bool:
    if not isinstance(values, list) or len(values) != len(want):
        return False
    for row, want_row in zip(values, want, strict=True):
        if not isinstance(row, list) or len(row) != len(want_row):
            return False
        if not all(math.isclose(v, w, rel_tol=1e-6) for v, w in zip(row, want_row, strict=True)):
            return False
    return True


def model_specs(count: int) -> list[ModelSpec]:
    """``count`` models with distinct scales; some in a sub-folder, two with their own code."""
    specs = []
    for index in range(count):
        # Halves are exact in float32, and no two models answer alike.
        scale = 1.5 + index
        folder = "team-b/" if index % 3 == 2 else ""
        target = f"{folder}m{index:02d}.tar.gz"
        if index == 4:
            specs.append(ModelSpec(target, scale, accept=CSV_TYPE, code=CSV_CODE))
        elif index == 7:
            specs.append(ModelSpec(target, scale, code=SLOW_PREDICT_CODE))
        else:
            specs.append(ModelSpec(target, scale))
    return specs


def build_archives(specs: list[ModelSpec], root: Path) -> Path:
    """Write each model's archive under ``root/models``; returns that folder (the prefix)."""
    models = root / "models"
    for spec in specs:
        source = scaled_model(root / "sources" / spec.target, spec.scale, spec.code)
        pack(source, models / spec.target)
    return models
