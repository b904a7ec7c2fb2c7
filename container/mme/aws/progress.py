"""The upload progress bar: tqdm on stderr, fed by boto3's transfer callbacks."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from tqdm import tqdm


class ProgressBar:
    """A tqdm bar that counts the bytes boto3 reports.

    boto3 calls the instance from several transfer threads at once, hence the lock.
    """

    def __init__(self, label: str, total_bytes: int, stream: TextIO | None = None) -> None:
        self._bar = tqdm(
            total=total_bytes,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream or sys.stderr,
            disable=False,
            mininterval=0.5,
            leave=True,
        )
        self._lock = threading.Lock()

    def __call__(self, transferred: int) -> None:
        """Record ``transferred`` more bytes (boto3's Callback protocol)."""
        with self._lock:
            self._bar.update(transferred)

    @property
    def done(self) -> int:
        """The bytes counted so far."""
        return int(self._bar.n)

    def finish(self) -> None:
        """Close the bar once the transfer is complete (it shows 100%)."""
        with self._lock:
            self._bar.update(max(0, int(self._bar.total or 0) - int(self._bar.n)))
            self._bar.close()
