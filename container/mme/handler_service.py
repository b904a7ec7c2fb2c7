"""The handler service that MMS runs in each model's workers.

MMS imports this module in a fresh worker for each model and calls :func:`handle`
with ``data=None`` once to load the model, then once per batch of requests.
"""

from __future__ import annotations

import logging
from typing import Any

from sagemaker_inference.default_handler_service import DefaultHandlerService

from mme.errors import ModelLoadError, is_out_of_memory, short_message
from mme.model_code import activate_code_dir
from mme.pytorch_defaults import PytorchDefaults
from mme.settings import Settings
from mme.stale_models import report_failed_load
from mme.transformer import ModelTransformer

logger = logging.getLogger(__name__)


class HandlerService(DefaultHandlerService):
    """Serves one model: its own ``code/`` first on ``sys.path``, PyTorch defaults for the rest."""

    def __init__(self, settings: Settings) -> None:
        transformer = ModelTransformer(PytorchDefaults(), settings.max_payload_bytes)
        super().__init__(transformer=transformer)
        self._settings = settings

    def initialize(self, context: Any) -> None:
        """Load the model; a failure fails the LOAD (507 when memory ran out)."""
        model_dir = context.system_properties["model_dir"]
        code_dir = activate_code_dir(model_dir)
        logger.info("loading model from %s (code: %s)", model_dir, code_dir or "none")
        try:
            self._service.validate_and_initialize(model_dir=model_dir, context=context)
        except Exception as exc:
            logger.error("model in %s failed to load: %s", model_dir, short_message(exc),
                         exc_info=exc)
            if is_out_of_memory(exc):
                report_failed_load(self._settings.server_temp_dir, context.model_name)
                # MMS answers the LOAD with 507 only for a MemoryError.
                raise MemoryError(short_message(exc)) from exc
            raise


_service: HandlerService | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """MMS entry point: load the model when ``data`` is None, else answer the batch."""
    global _service
    if data is None:
        _service = HandlerService(Settings.from_env())
        _service.initialize(context)
        return None
    if _service is None:
        raise ModelLoadError("the model is not loaded")
    return _service.handle(data, context)
