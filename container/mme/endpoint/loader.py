"""LOAD and UNLOAD of one model in the container, timed, the way SageMaker makes them.

A LOAD answered 507 (no memory or other resource left for the model) is tried again after
the least recently used model is unloaded, until it fits or nothing is left to unload. A
409 means the container has the model already (loaded by an earlier run of the endpoint).
Any other answer is a LoadFailedError with the container's status and message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http import HTTPStatus

from mme.endpoint.container_api import ContainerClient
from mme.endpoint.metrics import Metrics, ModelLabels, elapsed_us

logger = logging.getLogger(__name__)

LOADED = (HTTPStatus.OK, HTTPStatus.CONFLICT)
UNLOADED = (HTTPStatus.OK, HTTPStatus.NOT_FOUND)

# Unloads one other model to make room; returns its microseconds, or None if none is left.
EvictOne = Callable[[], int | None]


class LoadFailedError(Exception):
    """The container refused the model's LOAD."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"LOAD answered {status}: {message}")
        self.status = status
        self.message = message


class ModelLoader:
    """LOADs models from ``models_dir`` (where the container sees the disk cache)."""

    def __init__(self, container: ContainerClient, models_dir: str, metrics: Metrics) -> None:
        self.container = container
        self.models_dir = models_dir.rstrip("/")
        self.metrics = metrics

    def load(self, model: ModelLabels, evict_one: EvictOne) -> tuple[int, int | None]:
        """LOAD ``model``, making room on 507; returns the microseconds of the LOAD that
        worked and of the UNLOADs that made room for it (None if there were none)."""
        url = f"{self.models_dir}/{model.model_name}/model"
        unload_us: int | None = None
        while True:
            started = time.monotonic_ns()
            answer = self.container.load(model.model_name, url)
            elapsed = elapsed_us(started)
            if answer.status in LOADED:
                self.metrics.observe("ModelLoadingTime", elapsed, model)
                logger.info(
                    "loaded %s as %s in %d us", model.target_model, model.model_name, elapsed
                )
                return elapsed, unload_us
            if answer.status != HTTPStatus.INSUFFICIENT_STORAGE:
                raise LoadFailedError(answer.status, answer.message())
            freed = evict_one()
            if freed is None:
                raise LoadFailedError(answer.status, answer.message())
            unload_us = (unload_us or 0) + freed

    def unload(self, model: ModelLabels) -> int:
        """UNLOAD ``model``; returns the microseconds it took. A failure is logged, and the
        model counts as unloaded all the same."""
        started = time.monotonic_ns()
        answer = self.container.unload(model.model_name)
        elapsed = elapsed_us(started)
        if answer.status not in UNLOADED:
            logger.warning(
                "UNLOAD %s answered %d: %s", model.model_name, answer.status, answer.message()
            )
        self.metrics.observe("ModelUnloadingTime", elapsed, model)
        logger.info("unloaded %s (%s) in %d us", model.target_model, model.model_name, elapsed)
        return elapsed
