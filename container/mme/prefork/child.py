"""What a child forked by the zygote does to become the worker that MMS asked for.

A fresh worker would start with the launcher's streams, environment, working directory
and arguments, an empty logging configuration and its own thread count; the child sets
each of these, then runs MMS's worker script as ``__main__``, as ``python`` would.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import io
import logging
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

from mme.prefork import proctitle
from mme.prefork.protocol import STD_FDS
from mme.settings import Settings

logger = logging.getLogger(__name__)

MODEL_WORKER_SCRIPT = "model_service_worker.py"


def become_worker(request: dict[str, Any], fds: list[int], zygote_fds: list[int],
                  base_path: list[str], launcher_fd: int) -> NoReturn:
    """Turn this freshly forked process into the worker ``request`` describes; never returns.

    ``launcher_fd`` is the zygote's end of the launcher's connection (one of ``zygote_fds``).
    """
    code = 1
    try:
        lifeline = os.dup(launcher_fd)
        for fd in zygote_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        _reset_signals()
        _die_with_launcher(lifeline)
        _attach_std_streams(fds)
        argv: list[str] = request["argv"]
        _enter(request["env"], request["cwd"], argv, base_path)
        _set_thread_count()
        if _is_model_worker(argv[0]):
            _log_spawn(float(request["started"]))
            _import_handler(argv)
        code = _run_script(argv[0])
    except BaseException:
        traceback.print_exc()
    _finish(code)


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _die_with_launcher(lifeline: int) -> None:
    """Have the kernel end this process (SIGIO) once the launcher's connection closes.

    MMS's UNLOAD kills the launcher; the zygote then kills this child, but a zygote
    can die first (and be replaced), so the child watches its launcher itself. The
    file description is shared with the zygote's socket, which stays blocking: only
    its owner (this process) and the O_ASYNC flag change.
    """
    signal.signal(signal.SIGIO, signal.SIG_DFL)  # its default action ends the process
    fcntl.fcntl(lifeline, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(lifeline, fcntl.F_SETFL, fcntl.fcntl(lifeline, fcntl.F_GETFL) | os.O_ASYNC)
    # Closed before O_ASYNC was set: no signal will come for it.
    with socket.socket(fileno=os.dup(lifeline)) as sock:
        try:
            closed = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            closed = False
    if closed:
        os._exit(1)


def _attach_std_streams(fds: list[int]) -> None:
    for target, fd in zip(STD_FDS, fds, strict=True):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    # New stream objects: buffering depends on what fd 1 is now (a pipe to MMS), exactly
    # as the interpreter decides at start-up; stderr is always line-buffered.
    # (sys.__stdout__ and friends keep their objects: they write to the same fd numbers.)
    sys.stdin = _text_stream(0, "r", sys.stdin, line_buffering=False)
    sys.stdout = _text_stream(1, "w", sys.stdout, os.isatty(1))
    sys.stderr = _text_stream(2, "w", sys.stderr, line_buffering=True)


def _text_stream(fd: int, mode: str, old: Any, line_buffering: bool) -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    buffered: io.BufferedReader | io.BufferedWriter = (
        io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    )
    return io.TextIOWrapper(buffered, encoding=old.encoding, errors=old.errors,
                            line_buffering=line_buffering,
                            write_through=bool(getattr(old, "write_through", False)))


def _enter(env: dict[str, str], cwd: str, argv: list[str], base_path: list[str]) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = list(argv)
    # As the interpreter builds it: the script's folder, PYTHONPATH, then the standard
    # library and site-packages (the zygote's own, which are the same interpreter's).
    extra = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.path.dirname(os.path.realpath(argv[0])), *extra, *base_path]
    proctitle.set_command_line([sys.executable, *argv])
    _reset_logging()


def _reset_logging() -> None:
    # A fresh interpreter has no logging configuration; the zygote's goes.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _set_thread_count() -> None:
    # The zygote ran no torch operation, so no thread pool exists yet; the count set
    # here is what this worker's pools will have (torch read the zygote's env at import).
    # A fresh worker gets OMP_NUM_THREADS capped at the physical cores (MKL's dynamic
    # default), so the same cap applies here.
    import psutil
    import torch

    threads = Settings.from_env().num_threads
    torch.set_num_threads(min(threads, psutil.cpu_count(logical=False) or threads))


def _is_model_worker(script: str) -> bool:
    # MMS also runs its metrics collector with the workers' Python: its stdout is parsed
    # as metrics, so nothing of ours may appear there.
    return os.path.basename(script) == MODEL_WORKER_SCRIPT


def _log_spawn(launcher_started: float) -> None:
    # The configuration MMS's worker script makes first thing (a no-op for it then).
    logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO)
    _log_phase("spawn", time.time() - launcher_started,
               f"from the launcher's start to a worker forked from the warm parent, "
               f"pid {os.getpid()}")


def _log_phase(phase: str, seconds: float, detail: str) -> None:
    logger.info("LOAD phase %s: %.1f ms (%s)", phase, seconds * 1000, detail)


def _import_handler(argv: list[str]) -> None:
    if "--handler" not in argv:
        return
    spec = argv[argv.index("--handler") + 1]
    module = spec.split(":", 1)[0].removesuffix(".py").split("/")[-1]  # as MMS's loader does
    preloaded = module in sys.modules
    started = time.monotonic()
    try:
        importlib.import_module(module)
    except Exception:
        return
    how = "imported in the warm parent" if preloaded else "imported by this worker"
    _log_phase("handler import", time.monotonic() - started, f"{module}, {how}")


def _run_script(path: str) -> int:
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish(code: int) -> NoReturn:
    # What interpreter shutdown would do that matters here: atexit functions (logging's
    # flush, multiprocessing joining its children), then the streams.
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
