"""Unregisters the models that MMS leaves registered without workers after a failed LOAD.

It happens after a 507 LOAD, and can after a LOAD that MMS gave up on for time (a
``model_fn`` that hangs; see :mod:`mme.worker_guard`, which reports those).

When a worker answers a LOAD with "out of memory", MMS 1.1.11 sends the 507 and then
interrupts its own clean-up: the model stays registered with no worker, so the LOAD
that SageMaker retries after freeing memory gets 409 and the model never serves. The
worker leaves a marker in the server's private folder; the sweeper, in `mme serve`,
waits until MMS shows that model without workers and unregisters it.

Neither answer of MMS is final at first sight, so the sweeper acts on one only once it
has held for ``CONFIRM_S``:

* "without workers": a model that is being LOADed again is also listed so, for the few
  milliseconds between its registration and the start of its worker; a marker can
  outlive the failed LOAD by that much (a hung worker writes it as it ends).
* 404: MMS's unregister takes the model out of its table first and puts it back when
  its clean-up is interrupted, which is exactly the case the sweeper is for.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote, unquote

logger = logging.getLogger(__name__)

MARKER_DIR = "failed-loads"
SWEEP_INTERVAL_S = 0.2
MARKER_EXPIRY_S = 30.0
CONFIRM_S = 1.0  # far longer than MMS takes to start a registered model's worker


def report_failed_load(server_temp_dir: str, model_name: str) -> None:
    """Ask the sweeper to unregister ``model_name`` once MMS has given up on its workers."""
    if not server_temp_dir:
        return
    folder = os.path.join(server_temp_dir, MARKER_DIR)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, quote(model_name, safe="")), "w", encoding="utf-8"):
        pass


class StaleModelSweeper(threading.Thread):
    """A background thread of `mme serve` that removes the models reported stale."""

    def __init__(self, base_url: str, server_temp_dir: str, confirm_s: float = CONFIRM_S) -> None:
        super().__init__(name="stale-model-sweeper", daemon=True)
        self._base_url = base_url
        self._folder = os.path.join(server_temp_dir, MARKER_DIR)
        self._confirm_s = confirm_s
        self._stopped = threading.Event()
        self._seen: dict[str, tuple[bool, float]] = {}  # model -> (registered, since when)

    def run(self) -> None:
        """Sweep until :meth:`stop`."""
        while not self._stopped.wait(SWEEP_INTERVAL_S):
            try:
                self.sweep_once()
            except OSError as exc:  # MMS busy or stopping: try again next time
                logger.debug("stale-model sweep failed: %s", exc)

    def stop(self) -> None:
        """End the thread after the current sweep."""
        self._stopped.set()

    def sweep_once(self) -> None:
        """Unregister each reported model that MMS lists without workers."""
        if not os.path.isdir(self._folder):
            return
        for entry in os.listdir(self._folder):
            marker = os.path.join(self._folder, entry)
            name = unquote(entry)
            if self._settled(name, time.time() - os.path.getmtime(marker)):
                os.remove(marker)
                self._seen.pop(name, None)

    def _settled(self, name: str, age_s: float) -> bool:
        workers = self._workers(name)
        if workers:
            self._seen.pop(name, None)
            return age_s > MARKER_EXPIRY_S  # loaded again meanwhile: leave it alone
        registered = workers is not None
        now = time.monotonic()
        seen, since = self._seen.get(name, (not registered, now))
        if seen != registered:
            self._seen[name] = (registered, now)
            return False
        if now - since < self._confirm_s:
            return False
        if registered:
            self._request("DELETE", name)
            logger.info("unregistered %s: MMS left it without workers after a failed LOAD", name)
        return True

    def _workers(self, name: str) -> list[object] | None:
        try:
            described = json.loads(self._request("GET", name))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        described = described[0] if isinstance(described, list) else described
        return list(described.get("workers", []))

    def _request(self, method: str, name: str) -> bytes:
        url = f"{self._base_url}/models/{quote(name, safe='')}"
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return bytes(r.read())
