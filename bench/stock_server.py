"""The stock stack (bench/stock_stack.py) as a server under test, in a process of its own."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import psutil

from bench.server import BenchServer
from bench.stock_stack import REPO_ROOT
from harness.servers import ServerProcess
from mme.ports import free_port


class StockStackProcess(ServerProcess):
    """``python -m bench.stock_stack`` on a free port of 127.0.0.1, its output in ``log_path``."""

    STOP_TIMEOUT_S = 30.0

    def __init__(self, log_path: Path, workers: int | None = None) -> None:
        port = free_port()
        super().__init__(["--port", str(port)], port, log_path)
        if workers is not None:
            self.args += ["--workers", str(workers)]
        self.cwd = REPO_ROOT  # where `-m bench...` imports

    def command(self) -> list[str]:
        """The toolkit's MMS, started by the stock stack."""
        return [sys.executable, "-m", "bench.stock_stack", *self.args]

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM the stack; whatever it leaves behind (it was killed?) is killed too."""
        left = self.descendants()  # Java and its workers (the stack adopts Java as a subreaper)
        code = super().stop(timeout_s)
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        return code or 0


def stock_stack(log_dir: Path, tag: str, workers: int | None = None) -> BenchServer:
    """The stock toolkit + MMS as users run it, ``workers`` per model (None: MMS's one)."""
    process = StockStackProcess(log_dir / f"stock-stack-{tag}.log", workers)
    return BenchServer("stock stack", process, ready_line=None)
