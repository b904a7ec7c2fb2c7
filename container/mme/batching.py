"""Which decoded inputs can run as one batch, and how a batch's prediction is split again.

Inputs stack when they are tensors of at least two dimensions, the first being the batch
(``input_fn`` of one image gives ``1x3x224x224``), with the same dtype, device and other
dimensions: they are concatenated along the first one. The prediction splits when it is a
tensor, list or tuple with one entry per row of the batch; each request gets its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def groups(inputs: dict[int, Any]) -> list[list[int]]:
    """The request indexes of ``inputs``, grouped by what can be concatenated."""
    grouped: dict[object, list[int]] = {}
    for index, data in inputs.items():
        key: object = _stack_key(data) or ("alone", index)
        grouped.setdefault(key, []).append(index)
    return list(grouped.values())


def concatenate(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One batch of ``tensors``, along their first dimension."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def split(prediction: Any, rows: Sequence[int]) -> list[Any] | None:
    """Each request's share of ``prediction`` (``rows`` per request), or None if it cannot
    be split (it has not one entry per row)."""
    total = sum(rows)
    if (
        isinstance(prediction, torch.Tensor)
        and prediction.dim() >= 1
        and prediction.shape[0] == total
    ):
        return list(torch.split(prediction, list(rows)))
    if isinstance(prediction, (list, tuple)) and len(prediction) == total:
        shares, start = [], 0
        for count in rows:
            shares.append(type(prediction)(prediction[start : start + count]))
            start += count
        return shares
    return None


def _stack_key(data: Any) -> tuple[object, ...] | None:
    if isinstance(data, torch.Tensor) and data.dim() >= 2:
        return (data.dtype, data.device, tuple(data.shape[1:]))
    return None
