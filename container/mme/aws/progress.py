"""A stdlib progress bar on stderr for uploads, fed by boto3's transfer callbacks."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

MIB = 1024 * 1024
BAR_WIDTH = 30
LOG_STEP_PERCENT = 25  # without a terminal, print a line at every quarter rather than redraw


class ProgressBar:
    """Counts transferred bytes and draws ``name [####    ]  42% 12.0/28.5 MiB``.

    boto3 calls the instance from several transfer threads at once, hence the lock.
    """

    def __init__(self, label: str, total_bytes: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total_bytes, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self._redraw = self.stream.isatty()
        self._last_step = -1
        self._lock = threading.Lock()

    def __call__(self, transferred: int) -> None:
        """Record ``transferred`` more bytes (boto3's Callback protocol)."""
        with self._lock:
            self.done = min(self.done + transferred, self.total)
            self._draw()

    def finish(self) -> None:
        """End the bar's line once the transfer is complete."""
        with self._lock:
            self.done = self.total
            self._draw()
            if self._redraw:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self) -> None:
        percent = self.done * 100 // self.total
        if self._redraw:
            self.stream.write("\r" + self.render())
        else:
            step = percent // LOG_STEP_PERCENT
            if step == self._last_step:
                return
            self._last_step = step
            self.stream.write(self.render() + "\n")
        self.stream.flush()

    def render(self) -> str:
        """The bar as one line of text."""
        filled = self.done * BAR_WIDTH // self.total
        percent = self.done * 100 // self.total
        bar = "#" * filled + " " * (BAR_WIDTH - filled)
        return (
            f"{self.label} [{bar}] {percent:3d}% {self.done / MIB:.1f}/{self.total / MIB:.1f} MiB"
        )
