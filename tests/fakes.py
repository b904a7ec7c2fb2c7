"""A hand-written stand-in for MMS's Context, for unit tests of the handler service."""

from __future__ import annotations

from typing import Any


class FakeRequest:
    """One request's headers, as MMS's RequestProcessor exposes them."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self._headers


class FakeContext:
    """What the handler service reads from and writes to MMS's Context."""

    def __init__(self, model_dir: str, gpu_id: int | None = None, model_name: str = "m") -> None:
        self.model_name = model_name
        self.system_properties: dict[str, Any] = {"model_dir": model_dir, "gpu_id": gpu_id}
        self.request_processor: list[FakeRequest] = []
        self.status: tuple[int, str] | None = None
        self.content_types: dict[int, str] = {}

    def with_request(self, **headers: str) -> FakeContext:
        """Set the headers of the next (single-request) batch."""
        self.request_processor = [FakeRequest(dict(headers))]
        self.status = None
        self.content_types = {}
        return self

    def set_response_status(self, code: int, phrase: str) -> None:
        self.status = (code, phrase)

    def set_response_content_type(self, index: int, value: str) -> None:
        self.content_types[index] = value
