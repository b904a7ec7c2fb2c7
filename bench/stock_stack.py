"""The stock stack as users run it today: the SageMaker Inference Toolkit starts MMS.

    python -m bench.stock_stack --port 8081 [--workers 2]

What a user's container entrypoint does (``model_server.start_model_server`` with their
handler service, ``SAGEMAKER_MULTI_MODEL=true``), with MMS's defaults otherwise: one worker
per model (``--workers`` sets ``SAGEMAKER_MODEL_SERVER_WORKERS``), and each worker with
``OMP_NUM_THREADS=1`` unless the environment sets it. Returns when MMS stops (SIGTERM).

Only what a shared host needs differs from a container, none of it on the request path:

- MMS listens on 127.0.0.1 (MMS's own ``MMS_*_ADDRESS`` variables; the toolkit writes
  0.0.0.0), so the benchmark's traffic never leaves loopback;
- MMS's pid file, worker sockets and log files go to a private temp folder, so that other
  MMS servers on the host (ours, in the same run) do not collide with it and the log files
  (MMS writes them to ``./logs`` otherwise) do not land in the source tree;
- the toolkit looks for *the* MMS process among every process of the machine and refuses to
  start beside another one; here it looks among this process's descendants only (this process
  adopts MMS's Java, whose launcher exits, as a child subreaper).

Everything this process started ends with it, even when it fails.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import psutil

from bench.signals import exit_on_sigterm

HANDLER_SERVICE = "bench.stock_handler_service"
PR_SET_CHILD_SUBREAPER = 36
REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 20.0
# What the toolkit's Environment uses when SAGEMAKER_MODEL_SERVER_VMARGS is not set.
TOOLKIT_DEFAULT_VMARGS = "-XX:-UseContainerSupport"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stock_stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True, help="SAGEMAKER_BIND_TO_PORT")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="SAGEMAKER_MODEL_SERVER_WORKERS (default: MMS's, 1 per model)",
    )
    return parser.parse_args(argv)


def stock_environment(port: int, workers: int | None, temp_dir: str) -> dict[str, str]:
    """The variables a user's multi-model container sets, plus the host isolation above."""
    address = f"http://127.0.0.1:{port}"
    env = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MMS_INFERENCE_ADDRESS": address,
        "MMS_MANAGEMENT_ADDRESS": address,
        "TMPDIR": temp_dir,
        "LOG_LOCATION": temp_dir,
        "METRICS_LOCATION": temp_dir,
        "SAGEMAKER_MODEL_SERVER_VMARGS": f"{TOOLKIT_DEFAULT_VMARGS} -Djava.io.tmpdir={temp_dir}",
        # The toolkit runs `multi-model-server` by name; the workers import this package.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
    }
    if workers is not None:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    return env


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _own_mms_process() -> psutil.Process:
    """MMS's Java among this process's descendants (the toolkit's search, narrowed)."""
    from sagemaker_inference import model_server

    found = [
        p
        for p in psutil.Process().children(recursive=True)
        if model_server.MMS_NAMESPACE in _live_cmdline(p)
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one MMS process of this server, found {len(found)}")
    return found[0]


def _live_cmdline(process: psutil.Process) -> list[str]:
    try:
        return [] if process.status() == psutil.STATUS_ZOMBIE else process.cmdline()
    except psutil.Error:
        return []


def _end_descendants() -> None:
    """SIGTERM whatever is left under this process, then SIGKILL what outlives the grace."""
    left = psutil.Process().children(recursive=True)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _gone, alive = psutil.wait_procs(left, timeout=STOP_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def main(argv: list[str] | None = None) -> int:
    """Run the stock toolkit's MMS until SIGTERM; leave nothing running behind."""
    args = _arguments(argv)
    temp_dir = tempfile.mkdtemp(prefix="stk-", dir="/tmp")  # short: unix socket paths
    os.environ.update(stock_environment(args.port, args.workers, temp_dir))
    # SIGTERM before the toolkit installs its own handler must still clean up.
    exit_on_sigterm()
    _become_subreaper()
    try:
        # Imported only now: the toolkit reads SAGEMAKER_MULTI_MODEL when it is imported.
        from sagemaker_inference import model_server

        model_server._retrieve_mms_server_process = _own_mms_process
        model_server.start_model_server(handler_service=HANDLER_SERVICE)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _end_descendants()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
