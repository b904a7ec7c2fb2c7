"""The handler service that MMS runs in each model's workers.

MMS imports this module in a fresh worker for each model and calls :func:`handle`
with ``data=None`` once to load the model, then once per batch of requests.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sagemaker_inference.default_handler_service import DefaultHandlerService

from mme import batch_wire, worker_headers
from mme.errors import ModelLoadError, is_out_of_memory, short_message
from mme.model_code import activate_code_dir
from mme.model_requirements import RequirementsError, activate_requirements
from mme.pytorch_defaults import PytorchDefaults
from mme.thread_share import ThreadShare, granted_threads
from mme.transformer import ModelTransformer
from mme.worker_config import WorkerConfig
from mme.worker_guard import guarded
from mme.worker_records import record_batching, record_load_failure, record_worker

logger = logging.getLogger(__name__)


class HandlerService(DefaultHandlerService):
    """Serves one model: its own ``code/`` first on ``sys.path``, PyTorch defaults for the rest."""

    def __init__(self, config: WorkerConfig) -> None:
        transformer = ModelTransformer(PytorchDefaults(), config.max_payload_bytes)
        super().__init__(transformer=transformer)
        self._config = config
        self._threads = ThreadShare()

    @property
    def config(self) -> WorkerConfig:
        """What the server told this worker."""
        return self._config

    def initialize(self, context: Any) -> None:
        """Load the model; a failure fails the LOAD (507 when memory ran out)."""
        model_dir = context.system_properties["model_dir"]
        try:
            code_dir = activate_code_dir(model_dir)
            logger.info("loading model from %s (code: %s)", model_dir, code_dir or "none")
            activate_requirements(
                model_dir, self._config.requirements_dir, self._config.requirements_timeout_s
            )
            self._threads.before_load()
            self._service.validate_and_initialize(model_dir=model_dir, context=context)
            self._threads.after_load()
            record_batching(
                self._config.server_temp_dir,
                context.model_name,
                *self._service.batching(
                    self._config.max_batch_size, self._config.max_batch_delay_ms
                ),
            )
        except Exception as exc:
            self._load_failed(context.model_name, model_dir, exc)
            if is_out_of_memory(exc):
                # MMS answers the LOAD with 507 only for a MemoryError.
                raise MemoryError(short_message(exc)) from exc
            raise

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        """Answer MMS's requests (or one of the gateway's batches) with the threads granted."""
        self._threads.before_request(granted_threads(context))
        properties = context.request_processor[0].get_request_properties()
        if worker_headers.header(properties, batch_wire.BATCH_HEADER):
            answers = self._handle_batch(data, context)
        else:
            answers = super().handle(data, context)
        own = self._threads.after()
        if own:
            for index in range(len(answers)):
                context.set_response_header(index, worker_headers.OWN_THREADS, str(own))
        return answers

    def _handle_batch(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        try:
            parts = batch_wire.decode(bytes(data[0].get("body") or b""))
        except batch_wire.BatchWireError as exc:
            context.set_response_status(code=400, phrase="not a batch")
            return [json.dumps({"code": 400, "message": str(exc)})]
        answered = self._service.transform_batch(parts, context)
        context.set_response_content_type(0, batch_wire.CONTENT_TYPE)
        return [batch_wire.encode(answered, with_status=True)]

    def _load_failed(self, model_name: str, model_dir: str, exc: Exception) -> None:
        reason = short_message(exc)
        # pip's output says why requirements failed; our installer's stack trace would bury it.
        trace = None if isinstance(exc, RequirementsError) else exc
        logger.error("model in %s failed to load: %s", model_dir, reason, exc_info=trace)
        record_load_failure(self._config.server_temp_dir, model_name, reason)


_service: HandlerService | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """MMS entry point: load the model when ``data`` is None, else answer the batch."""
    global _service
    if data is None:
        config = WorkerConfig.from_env()
        record_worker(config.server_temp_dir, context.model_name)
        timed_out = (
            f"the LOAD did not finish within {config.response_timeout_s} s "
            "(SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS)"
        )
        with guarded(
            f"the LOAD of model {context.model_name}",
            config.response_timeout_s,
            on_abandon=lambda: record_load_failure(
                config.server_temp_dir, context.model_name, timed_out
            ),
        ):
            _service = HandlerService(config)
            _service.initialize(context)
        return None
    if _service is None:
        raise ModelLoadError("the model is not loaded")
    with guarded(f"a request to model {context.model_name}", _service.config.response_timeout_s):
        return _service.handle(data, context)
