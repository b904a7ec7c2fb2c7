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
from mme.model_requirements import RequirementsError, activate_requirements
from mme.pytorch_defaults import PytorchDefaults
from mme.settings import Settings
from mme.stale_models import report_failed_load
from mme.transformer import ModelTransformer
from mme.worker_guard import guarded

logger = logging.getLogger(__name__)


class HandlerService(DefaultHandlerService):
    """Serves one model: its own ``code/`` first on ``sys.path``, PyTorch defaults for the rest."""

    def __init__(self, settings: Settings) -> None:
        transformer = ModelTransformer(PytorchDefaults(), settings.max_payload_bytes)
        super().__init__(transformer=transformer)
        self._settings = settings

    @property
    def settings(self) -> Settings:
        """The settings this worker was started with."""
        return self._settings

    def initialize(self, context: Any) -> None:
        """Load the model; a failure fails the LOAD (507 when memory ran out)."""
        model_dir = context.system_properties["model_dir"]
        _check_addressable(context.model_name)
        code_dir = activate_code_dir(model_dir)
        logger.info("loading model from %s (code: %s)", model_dir, code_dir or "none")
        try:
            activate_requirements(model_dir, self._settings.requirements_dir,
                                  self._settings.requirements_timeout_s)
            self._service.validate_and_initialize(model_dir=model_dir, context=context)
        except RequirementsError as exc:
            # pip's output says why; a stack trace of our installer would only bury it.
            logger.error("model in %s failed to load: %s", model_dir, exc.message)
            raise
        except Exception as exc:
            logger.error("model in %s failed to load: %s", model_dir, short_message(exc),
                         exc_info=exc)
            if is_out_of_memory(exc):
                report_failed_load(self._settings.server_temp_dir, context.model_name)
                # MMS answers the LOAD with 507 only for a MemoryError.
                raise MemoryError(short_message(exc)) from exc
            raise


def _check_addressable(model_name: str) -> None:
    # MMS registers any name, but one with a "/" (or "." or "..") can never be reached
    # again under /models/<name>: the model could be neither invoked nor unloaded.
    if "/" in model_name or model_name in (".", ".."):
        message = (f"model name {model_name!r} cannot be used in /models/<name>/invoke: "
                   "a name must not contain '/' or be '.' or '..'")
        logger.error("refusing to load: %s", message)
        raise ModelLoadError(message)


_service: HandlerService | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """MMS entry point: load the model when ``data`` is None, else answer the batch."""
    global _service
    if data is None:
        settings = Settings.from_env()
        with guarded(f"the LOAD of model {context.model_name}", settings.response_timeout_s,
                     settings.server_temp_dir,
                     on_abandon=lambda: report_failed_load(settings.server_temp_dir,
                                                           context.model_name)):
            _service = HandlerService(settings)
            _service.initialize(context)
        return None
    if _service is None:
        raise ModelLoadError("the model is not loaded")
    with guarded(f"a request to model {context.model_name}",
                 _service.settings.response_timeout_s, _service.settings.server_temp_dir):
        return _service.handle(data, context)
