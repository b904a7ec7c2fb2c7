"""The per-request workflow: the toolkit's Transformer with our error mapping and module rules."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any

from mms.context import RequestProcessor
from sagemaker_inference import content_types, utils
from sagemaker_inference.transformer import Transformer

from mme import batching, worker_headers
from mme.batch_wire import Part
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
    # Parameters go (charset=utf-8 must not hide application/json from the defaults), but
    # a multipart body cannot be read without its boundary.
    if not header:
        return header
    media = header.split(";", 1)[0].strip().lower()
    return header.strip() if media.startswith("multipart/") else media


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
        phase = (
            "model_fn"
            if func is self._model_fn
            else "warm-up"
            if func is self._model_warmup_fn
            else None
        )
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
        """Answer each request of MMS's batch; errors become a status and a short message."""
        try:
            self.validate_and_initialize(
                model_dir=context.system_properties["model_dir"], context=context
            )
            return [self._transform_one(item, index, context) for index, item in enumerate(data)]
        except Exception as exc:
            status, message = self._log_error(exc)
            context.set_response_status(code=status, phrase=utils.remove_crlf(message)[:200])
            context.set_response_content_type(0, content_types.JSON)
            return [error_body(status, message)]

    def batching(self, max_size: int, max_delay_ms: int) -> tuple[int, int]:
        """How many requests this model answers at once, and how long a batch may wait to fill
        (call after the LOAD; the server's limits are ``max_size`` and ``max_delay_ms``).

        ``transform_fn`` cannot be split: 1. The default functions batch by themselves. Code
        of one's own opts in with ``MAX_BATCH_SIZE`` (and ``MAX_BATCH_DELAY_MS``) in its module.
        """
        if self._transform_fn != self._default_transform_fn:  # bound methods: equal, not same
            return 1, 0
        module = sys.modules.get(self._environment.module_name)
        if module is None or not any(
            hasattr(module, name) for name in ("input_fn", "predict_fn", "output_fn")
        ):
            return max_size, max_delay_ms
        size = getattr(module, "MAX_BATCH_SIZE", 1)
        delay = getattr(module, "MAX_BATCH_DELAY_MS", max_delay_ms)
        if not isinstance(size, int) or not isinstance(delay, int) or size < 2:
            return 1, 0
        return min(size, max_size), max(0, delay)

    def _transform_one(self, item: dict[str, Any], index: int, context: Any) -> Any:
        properties = context.request_processor[index].get_request_properties()
        body, content_type, accept = self._request(properties, item.get("body"))
        result = self._run_handler_function(
            self._transform_fn, self._model, body, content_type, accept
        )
        response, response_type = self._answer(result, accept)
        context.set_response_content_type(index, response_type)
        return response

    def transform_batch(self, parts: list[Part], context: Any) -> list[Part]:
        """Answer the requests of one of the gateway's batches, each with its own status.

        Each request is decoded on its own; those whose inputs stack run as one
        ``predict_fn`` call, and if that fails each runs alone, so that a bad request
        fails alone. While a user function runs for a request, the context's request
        properties are that request's headers.
        """
        original = context.request_processor
        answers: dict[int, Part] = {}
        inputs: dict[int, tuple[Any, str]] = {}
        try:
            for index, part in enumerate(parts):
                self._for_request(context, part)
                try:
                    inputs[index] = self._decode(part)
                except Exception as exc:
                    answers[index] = self._error_part(exc)
            predictions = self._predict_all(
                {i: data for i, (data, _) in inputs.items()}, parts, context, answers
            )
            for index, prediction in predictions.items():
                self._for_request(context, parts[index])
                try:
                    result = self._run_handler_function(
                        self._output_fn, prediction, inputs[index][1]
                    )
                    body, response_type = self._answer(result, inputs[index][1])
                    answers[index] = _part(200, body, response_type)
                except Exception as exc:
                    answers[index] = self._error_part(exc)
        finally:
            context.request_processor = original
        return [answers[index] for index in range(len(parts))]

    def _decode(self, part: Part) -> tuple[Any, str]:
        properties = dict(part.headers)
        body, content_type, accept = self._request(properties, part.body)
        return self._run_handler_function(self._input_fn, body, content_type), accept

    def _predict_all(
        self, inputs: dict[int, Any], parts: list[Part], context: Any, answers: dict[int, Part]
    ) -> dict[int, Any]:
        predictions: dict[int, Any] = {}
        for group in batching.groups(inputs):
            self._for_request(context, parts[group[0]])
            shares = None
            if len(group) > 1:
                with contextlib.suppress(Exception):  # each request is tried alone below
                    batch = batching.concatenate([inputs[i] for i in group])
                    prediction = self._run_handler_function(self._predict_fn, batch, self._model)
                    shares = batching.split(prediction, [inputs[i].shape[0] for i in group])
            if shares is not None:
                predictions.update(zip(group, shares, strict=True))
                continue
            for index in group:
                self._for_request(context, parts[index])
                try:
                    predictions[index] = self._run_handler_function(
                        self._predict_fn, inputs[index], self._model
                    )
                except Exception as exc:
                    answers[index] = self._error_part(exc)
        return predictions

    @staticmethod
    def _for_request(context: Any, part: Part) -> None:
        # User functions read the request's headers at request_processor[0], as MMS sets it.
        context.request_processor = [RequestProcessor(dict(part.headers))]

    def _request(self, properties: dict[str, Any], body: Any) -> tuple[Any, str | None, str]:
        """The body (text for UTF-8 types), content type and accept of one request."""
        if body is None:
            raise BadRequestError(
                "the request has no body (form-encoded and multipart bodies are not supported)"
            )
        content_type = _media_type(
            worker_headers.header(properties, worker_headers.ORIGINAL_CONTENT_TYPE)
            or utils.retrieve_content_type_header(properties)
        )
        accept = properties.get("Accept") or properties.get("accept")
        if not accept or accept == content_types.ANY:
            accept = self._environment.default_accept
        if content_type in content_types.UTF8_TYPES and isinstance(body, (bytes, bytearray)):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequestError(f"the {content_type} body is not valid UTF-8") from exc
        return body, content_type, accept

    def _answer(self, result: Any, accept: str) -> tuple[Any, str]:
        response, response_type = result if isinstance(result, tuple) else (result, accept)
        too_large = isinstance(response, (bytes, bytearray, str)) and (
            len(response) > self._max_payload_bytes
        )
        if too_large:
            raise PayloadTooLargeError(
                f"the response has {len(response)} bytes, over the limit of "
                f"{self._max_payload_bytes} (SAGEMAKER_MAX_PAYLOAD_IN_MB)"
            )
        return response, response_type

    def _error_part(self, exc: BaseException) -> Part:
        status, message = self._log_error(exc)
        return _part(status, error_body(status, message), content_types.JSON)

    @staticmethod
    def _log_error(exc: BaseException) -> tuple[int, str]:
        status = http_status(exc)
        message = short_message(exc)
        if status >= 500:
            logger.error("request failed with %d: %s", status, message, exc_info=exc)
        else:
            logger.warning("request refused with %d: %s", status, message)
        return status, message


def _part(status: int, body: Any, content_type: str) -> Part:
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return Part(data, [("Content-Type", content_type)], status)
