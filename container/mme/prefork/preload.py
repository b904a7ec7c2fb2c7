"""What the zygote imports once so that no forked worker has to.

Only imports: no torch operation runs here, so that neither torch's thread pools nor
CUDA exist when the zygote forks (a forked child cannot use the parent's threads).
"""

from __future__ import annotations

import gc
import importlib
import logging
import time

from mme.prefork.heap import fill_free_blocks

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
    # Imported by every worker, at start (a text file's codec) or by torch.load:
    # imported here, their objects are shared instead of allocated again in each worker.
    "encodings.ascii",
    "torch.utils.serialization",
)


def preload(modules: tuple[str, ...] = MODULES) -> float:
    """Import ``modules``, fill the free memory blocks, freeze what survives into the
    permanent GC generation; seconds taken.

    The freeze keeps the collector from writing to these objects in every child, which
    would copy their pages and undo the sharing that makes a worker cheap; filling the
    free blocks keeps each child's allocations out of the shared pages
    (:mod:`mme.prefork.heap`).
    """
    started = time.monotonic()
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    fill_free_blocks()
    gc.freeze()
    return time.monotonic() - started
