"""The handler service users write for the stock toolkit, as the project's seed document shows.

``DefaultHandlerService`` with a ``Transformer`` around the toolkit's default inference
handler; in multi-model mode ``initialize`` appends the model's ``code/`` folder to
``sys.path``, so that the toolkit imports that model's own ``inference.py``. MMS imports
this module in every stock worker (``SAGEMAKER_HANDLER``) and finds its only class.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer

ENABLE_MULTI_MODEL = os.getenv("SAGEMAKER_MULTI_MODEL", "false") == "true"


class HandlerService(DefaultHandlerService):
    """The seed's handler service, unchanged in behaviour."""

    def __init__(self) -> None:
        self._initialized = False
        transformer = Transformer(default_inference_handler=DefaultInferenceHandler())
        super().__init__(transformer=transformer)

    def initialize(self, context: Any) -> None:
        """Put ``<model_dir>/code`` on ``sys.path`` (multi-model mode), then load the model."""
        if not self._initialized and ENABLE_MULTI_MODEL:
            code_dir = os.path.join(context.system_properties.get("model_dir"), "code")
            sys.path.append(code_dir)
            self._initialized = True
        super().initialize(context)
