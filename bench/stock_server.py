"""The stock stack (bench/stock_stack.py) as a server under test, in a process of its own."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import psutil

from bench.server import BenchServer
from bench.stock_stack import REPO_ROOT
from mme.ports import free_port
from tests.server_process import terminate, wait_for_ping

STOP_TIMEOUT_S = 30.0


class StockStackProcess:
    """``python -m bench.stock_stack`` on a free port of 127.0.0.1, its output in ``log_path``."""

    def __init__(self, log_path: Path, workers: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float) -> StockStackProcess:
        """Start the toolkit's MMS; return once ``/ping`` answers."""
        command = [sys.executable, "-m", "bench.stock_stack", "--port", str(self.port)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=REPO_ROOT)  # where `-m bench...` imports
        wait_for_ping(self.url, self.process, timeout_s)
        return self

    def stop(self) -> int:
        """SIGTERM the stack; whatever it leaves behind (it was killed?) is killed too."""
        if self.process is None:
            return 0
        left = self.descendants()
        code = terminate(self.process, STOP_TIMEOUT_S)
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        return code

    def log(self) -> str:
        """What the stack printed so far (the toolkit's and MMS's logs)."""
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """Java and its workers (bench.stock_stack adopts Java as a child subreaper)."""
        if self.process is None:
            return []
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def stock_stack(log_dir: Path, tag: str, workers: int | None = None) -> BenchServer:
    """The stock toolkit + MMS as users run it, ``workers`` per model (None: MMS's one)."""
    process = StockStackProcess(log_dir / f"stock-stack-{tag}.log", workers)
    return BenchServer("stock stack", process, ready_line=None)
