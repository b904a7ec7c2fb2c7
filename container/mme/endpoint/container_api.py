"""A client for the container's multi-model API (LOAD, LIST, UNLOAD, INVOKE), as SageMaker's.

Only the status and body of each answer are returned; deciding what a status means
is the caller's job. A container that cannot be reached is a ServiceUnavailableError
(503, botocore retries it); one that does not answer in time is a ContainerTimeoutError.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from mme.endpoint.errors import ServiceUnavailableError

MAX_LIST_PAGES = 1000


class ContainerTimeoutError(Exception):
    """The container did not answer within the timeout."""


@dataclass(frozen=True)
class Answer:
    """The container's status, body and headers (lower-case names)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def message(self) -> str:
        """The error message: the JSON body's ``message``, else the body as text."""
        text = self.body.decode("utf-8", errors="replace")
        try:
            document = json.loads(text)
        except ValueError:
            return text.strip()
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            return str(document["message"])
        return text.strip()


class ContainerClient:
    """Calls to one container at ``base_url`` (``http://host:port``)."""

    def __init__(
        self,
        base_url: str,
        invoke_timeout_s: float,
        load_timeout_s: float,
        unload_timeout_s: float = 130.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"container URL {base_url!r} must look like http://host:port")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.invoke_timeout_s = invoke_timeout_s
        self.load_timeout_s = load_timeout_s
        self.unload_timeout_s = unload_timeout_s

    def request(
        self,
        method: str,
        path: str,
        timeout_s: float,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One HTTP exchange on a fresh connection.

        No delayed ACK can hold it up: http.client sets TCP_NODELAY on its socket, and a
        fresh connection carries no earlier exchange whose ACK a write would wait for.
        """
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return Answer(
                response.status,
                data,
                {name.lower(): value for name, value in response.getheaders()},
            )
        except TimeoutError as exc:
            raise ContainerTimeoutError(
                f"{method} {path} got no answer within {timeout_s:g} s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnavailableError(
                f"The model container at {self.base_url} cannot be reached: {exc}"
            ) from exc
        finally:
            connection.close()

    def ping(self, timeout_s: float = 2.0) -> int:
        """The status of ``GET /ping``."""
        return self.request("GET", "/ping", timeout_s).status

    def list_models(self, timeout_s: float = 10.0) -> list[str]:
        """Every loaded model's name, following ``nextPageToken``; raise if LIST is not 200."""
        names: list[str] = []
        path = "/models"
        for _ in range(MAX_LIST_PAGES):
            answer = self.request("GET", path, timeout_s)
            if answer.status != 200:
                raise ServiceUnavailableError(
                    f"GET {path} answered {answer.status}: {answer.message()}"
                )
            document = json.loads(answer.body or b"{}")
            names += [str(model["modelName"]) for model in document.get("models", [])]
            token = document.get("nextPageToken")
            if not token:
                break
            path = f"/models?next_page_token={quote(str(token))}"
        return names

    def load(self, model_name: str, url: str) -> Answer:
        """LOAD: ``POST /models`` with the model's name and folder."""
        body = json.dumps({"model_name": model_name, "url": url}).encode("utf-8")
        return self.request(
            "POST", "/models", self.load_timeout_s, body, {"Content-Type": "application/json"}
        )

    def unload(self, model_name: str) -> Answer:
        """UNLOAD: ``DELETE /models/<name>``."""
        return self.request("DELETE", f"/models/{quote(model_name)}", self.unload_timeout_s)

    def invoke(self, model_name: str, body: bytes, headers: dict[str, str]) -> Answer:
        """INVOKE: ``POST /models/<name>/invoke`` with the forwarded headers."""
        return self.request(
            "POST", f"/models/{quote(model_name)}/invoke", self.invoke_timeout_s, body, headers
        )
