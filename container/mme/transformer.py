"""The per-request workflow: the toolkit's Transformer with our error mapping and module rules."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sagemaker_inference import content_types, utils
from sagemaker_inference.transformer import Transformer

from mme.errors import (
    BadRequestError,
    ModelLoadError,
    PayloadTooLargeError,
    http_status,
    short_message,
)
from mme.model_code import user_module_path

logger = logging.getLogger(__name__)


def _media_type(header: str | None) -> str | None:
    return header.split(";", 1)[0].strip().lower() if header else header


def error_body(status: int, message: str) -> str:
    """The JSON body of every error answer: short, and without a stack trace."""
    return json.dumps({"code": status, "message": message})


class ModelTransformer(Transformer):
    """Loads one model's user module and runs its functions for each request.

    It differs from the toolkit's Transformer in three ways: the user module must come
    from the model's own ``code/`` (a module of the same name elsewhere is never used),
    every exception gets its HTTP status from :func:`mme.errors.http_status`, and
    clients get a short JSON message while the stack trace goes to the log.
    """

    def __init__(self, default_inference_handler: Any, max_payload_bytes: int) -> None:
        super().__init__(default_inference_handler=default_inference_handler)
        self._max_payload_bytes = max_payload_bytes
        self._model_dir = ""

    def validate_and_initialize(self, model_dir: str = "", context: Any = None) -> None:
        """Import the user module and run ``model_fn`` (once per worker)."""
        self._model_dir = model_dir
        super().validate_and_initialize(model_dir=model_dir, context=context)

    def _run_handler_function(self, func: Any, *argv: Any) -> Any:
        # model_fn and the warm-up are phases of a LOAD: their times go to the worker log.
        phase = ("model_fn" if func is self._model_fn
                 else "warm-up" if func is self._model_warmup_fn else None)
        if phase is None:
            return super()._run_handler_function(func, *argv)
        started = time.monotonic()
        try:
            return super()._run_handler_function(func, *argv)
        finally:
            logger.info("LOAD phase %s: %.1f ms", phase, (time.monotonic() - started) * 1000)

    def _validate_user_module_and_set_functions(self) -> None:
        if user_module_path(self._model_dir, self._environment.module_name) is None:
            self._use_defaults_only()
            return
        try:
            super()._validate_user_module_and_set_functions()
        except ValueError as exc:  # transform_fn mixed with input_fn/predict_fn/output_fn
            raise ModelLoadError(f"{self._environment.module_name}.py: {exc}") from exc

    def _use_defaults_only(self) -> None:
        handler = self._default_inference_handler
        self._model_fn = handler.default_model_fn
        self._input_fn = handler.default_input_fn
        self._predict_fn = handler.default_predict_fn
        self._output_fn = handler.default_output_fn
        self._transform_fn = self._default_transform_fn

    def transform(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        """Answer each request of the batch; errors become a status and a short message."""
        try:
            self.validate_and_initialize(model_dir=context.system_properties["model_dir"],
                                         context=context)
            return [self._transform_one(item, index, context) for index, item in enumerate(data)]
        except Exception as exc:
            return [self._error_response(exc, context)]

    def _transform_one(self, item: dict[str, Any], index: int, context: Any) -> Any:
        properties = context.request_processor[index].get_request_properties()
        body = item.get("body")
        if body is None:
            raise BadRequestError(
                "the request has no body (form-encoded and multipart bodies are not supported)"
            )
        content_type = _media_type(utils.retrieve_content_type_header(properties))
        accept = properties.get("Accept") or properties.get("accept")
        if not accept or accept == content_types.ANY:
            accept = self._environment.default_accept
        if content_type in content_types.UTF8_TYPES and isinstance(body, (bytes, bytearray)):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequestError(f"the {content_type} body is not valid UTF-8") from exc
        result = self._run_handler_function(
            self._transform_fn, self._model, body, content_type, accept
        )
        response, response_type = result if isinstance(result, tuple) else (result, accept)
        too_large = isinstance(response, (bytes, bytearray, str)) and (
            len(response) > self._max_payload_bytes
        )
        if too_large:
            raise PayloadTooLargeError(
                f"the response has {len(response)} bytes, over the limit of "
                f"{self._max_payload_bytes} (SAGEMAKER_MAX_PAYLOAD_IN_MB)"
            )
        context.set_response_content_type(index, response_type)
        return response

    @staticmethod
    def _error_response(exc: BaseException, context: Any) -> str:
        status = http_status(exc)
        message = short_message(exc)
        if status >= 500:
            logger.error("request failed with %d: %s", status, message, exc_info=exc)
        else:
            logger.warning("request refused with %d: %s", status, message)
        context.set_response_status(code=status, phrase=utils.remove_crlf(message)[:200])
        context.set_response_content_type(0, content_types.JSON)
        return error_body(status, message)
