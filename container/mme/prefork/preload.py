"""What the zygote imports once so that no forked worker has to.

Only imports: no torch operation runs here, so that neither torch's thread pools nor
CUDA exist when the zygote forks (a forked child cannot use the parent's threads).
"""

from __future__ import annotations

import gc
import importlib
import logging
import time

logger = logging.getLogger(__name__)

MODULES = (
    "torch",
    "numpy",
    "PIL.Image",
    "torchvision",
    "sagemaker_inference.default_handler_service",
    "sagemaker_inference.transformer",
    "mms.model_service_worker",
    "mms.model_loader",
    "mme.handler_service",
)


def preload(modules: tuple[str, ...] = MODULES) -> float:
    """Import ``modules``, freeze what survives into the permanent GC generation; seconds taken.

    The freeze keeps the collector from writing to these objects in every child, which
    would copy their pages and undo the sharing that makes a worker cheap.
    """
    started = time.monotonic()
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    return time.monotonic() - started
