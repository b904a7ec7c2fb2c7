"""A worker's side of the CPU budget: run each request with the threads the gateway granted.

The gateway (:mod:`mme.gateway.scheduler`) sends its grant in a request header; the
worker sets torch's intra-op thread count to it before the request runs. A model whose
code sets its own thread count keeps it: the worker notices the change, stops setting
the count, and says in each answer how many threads the model uses, so that the gateway
can count them.

torch is imported where it is used: importing this module costs nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from mme import worker_headers

logger = logging.getLogger(__name__)


def granted_threads(context: Any) -> int | None:
    """The grant in the batch's first request, or None when there is none."""
    value = worker_headers.header(
        context.request_processor[0].get_request_properties(), worker_headers.THREADS
    )
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class _Counts(threading.local):
    expected: int | None = None  # what this thread's count is, as far as we know


class ThreadShare:
    """Sets torch's thread count per request, unless the model took charge of it.

    The count is the calling thread's own (OpenMP keeps one per thread): a worker that
    serves several connections on threads runs each request with its own grant.
    """

    def __init__(self) -> None:
        self._counts = _Counts()
        self.own_threads = 0  # the model's own count, once its code changed ours

    def before_load(self) -> None:
        """Note the count the model's code finds, to see whether it changes it."""
        import torch

        self._counts.expected = torch.get_num_threads()

    def after_load(self) -> None:
        """See whether the model's code set the count while it loaded."""
        import torch

        self._notice_own_count(torch.get_num_threads())

    def before_request(self, granted: int | None) -> None:
        """Apply ``granted`` (if any) unless the model sets its own count."""
        import torch

        self._notice_own_count(torch.get_num_threads())
        if granted is None or self.own_threads:
            return
        if torch.get_num_threads() != granted:
            torch.set_num_threads(granted)
        self._counts.expected = granted

    def after(self) -> int:
        """The model's own thread count (0 while it leaves the count to us)."""
        import torch

        self._notice_own_count(torch.get_num_threads())
        return self.own_threads

    def _notice_own_count(self, current: int) -> None:
        if self.own_threads or self._counts.expected is None or current == self._counts.expected:
            return
        self.own_threads = current
        logger.info(
            "the model's code set torch's thread count to %d itself: it keeps it, "
            "and the server's CPU budget counts %d thread(s) per request of it",
            current,
            current,
        )
