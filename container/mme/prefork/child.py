"""What a child forked by the zygote does to become the process that MMS asked for.

A fresh worker would start with the launcher's streams, environment, working directory
and arguments, an empty logging configuration and its own thread count; the child sets
each of these, then either runs the launcher's script as ``__main__``, as ``python``
would (:func:`become_worker`), or serves one connection of MMS to a model's backend with
MMS's own worker code, as the stock backend's forked process does (:func:`serve_connection`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
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
from collections.abc import Callable
from typing import Any, NoReturn

from mme.prefork import lifeline, proctitle
from mme.prefork.backend import is_model_worker, option
from mme.prefork.protocol import STD_FDS
from mme.prefork.shared_connections import SharedModel
from mme.worker_config import WorkerConfig

logger = logging.getLogger(__name__)


def prepare(request: dict[str, Any]) -> None:
    """Work out, in the zygote, what a child of ``request`` changes: its environment
    against the zygote's, and its thread count.

    Every object that a forked child touches costs it a copy of that object's page (its
    reference count changes), so the child's own work is kept to what differs.
    """
    env: dict[str, str] = request["env"]
    request["unset"] = [key for key in os.environ if key not in env]
    request["set"] = {key: value for key, value in env.items() if os.environ.get(key) != value}
    # A fresh worker gets OMP_NUM_THREADS capped at the physical cores (MKL's dynamic
    # default), so the same cap applies here.
    config = WorkerConfig.from_env(env)
    request["threads"] = min(config.num_threads, _physical_cores() or config.num_threads)
    request["share"] = config.share_model


@functools.cache
def _physical_cores() -> int | None:
    import psutil

    return psutil.cpu_count(logical=False)


def become_worker(
    request: dict[str, Any], fds: list[int], base_path: list[str], launcher_fd: int
) -> NoReturn:
    """Turn this freshly forked process into the program ``request`` runs; never returns.

    ``launcher_fd`` is the zygote's end of the launcher's connection: when it closes
    (MMS killed the launcher), this process ends.
    """
    code = 1
    try:
        lifeline.die_with(_set_up(fds, launcher_fd, ()))
        argv: list[str] = request["argv"]
        _enter(request, base_path, script_dir=True)
        _reset_logging()
        if is_model_worker(argv[0]):
            _log_spawn(float(request["started"]))
            _import_handler(argv)
        code = _exit_status(lambda: runpy.run_path(argv[0], run_name="__main__"))
    except BaseException:
        traceback.print_exc()
    _finish(code)


def serve_connection(
    request: dict[str, Any],
    fds: list[int],
    base_path: list[str],
    stand_in_fd: int,
    conn_fd: int,
    feed_fd: int,
) -> NoReturn:
    """Serve MMS's connection ``conn_fd`` to the backend that ``request`` started, with
    MMS's worker code; never returns.

    ``stand_in_fd`` is the zygote's end of the stand-in's connection: when it closes (MMS
    killed the backend), this worker hangs up on MMS, and MMS's code ends it. When
    ``feed_fd`` is not -1, the zygote sends the model's later connections through it, and
    this worker serves them too (:mod:`mme.prefork.shared_connections`).
    """
    code = 1
    try:
        feed = (feed_fd,) if feed_fd >= 0 else ()
        connections = {conn_fd}
        lifeline.hang_up_with(_set_up(fds, stand_in_fd, (conn_fd, *feed)), connections)
        argv: list[str] = request["argv"]
        # MMS's backend takes its own folder off sys.path (its modules' names would shadow
        # others'), so it is not put there.
        _enter(request, base_path, script_dir=False)
        _log_to_stdout()
        _log_spawn(float(request["started"]))
        _import_handler(argv)
        code = _exit_status(lambda: _start_mms_worker(argv, conn_fd, feed_fd, connections))
    except BaseException:
        traceback.print_exc()
    _finish(code)


def _set_up(fds: list[int], lifeline_fd: int, keep: tuple[int, ...]) -> int:
    """Drop what the zygote holds (but ``keep``), take the launcher's streams; return the
    lifeline's fd."""
    kept = os.dup(lifeline_fd)
    _close_all_but({*fds, kept, *keep})
    _reset_signals()
    _attach_std_streams(fds)
    return kept


def _close_all_but(keep: set[int]) -> None:
    # The zygote holds a listening socket per loaded model and a connection per launcher:
    # closing ranges costs a few system calls however many there are.
    low = STD_FDS[-1] + 1
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
    return io.TextIOWrapper(
        buffered,
        encoding=old.encoding,
        errors=old.errors,
        line_buffering=line_buffering,
        write_through=bool(getattr(old, "write_through", False)),
    )


def _enter(request: dict[str, Any], base_path: list[str], script_dir: bool) -> None:
    env: dict[str, str] = request["env"]
    argv: list[str] = request["argv"]
    for key in request["unset"]:
        del os.environ[key]
    os.environ.update(request["set"])
    os.chdir(request["cwd"])
    sys.argv = list(argv)
    # As the interpreter builds it: the script's folder, PYTHONPATH, then the standard
    # library and site-packages (the zygote's own, which are the same interpreter's).
    extra = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    first = [os.path.dirname(os.path.realpath(argv[0]))] if script_dir else []
    sys.path[:] = [*first, *extra, *base_path]
    proctitle.set_command_line([sys.executable, *argv])
    _set_thread_count(int(request["threads"]))


def _log_to_stdout() -> None:
    """Log as MMS's worker does: INFO and above to stdout, the bare message.

    Without ``logging.basicConfig``, which would set the root logger's level: that clears
    the cache of every logger, and copies each logger's page into this process.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers = [handler]
    if root.level != logging.INFO:
        root.setLevel(logging.INFO)


def _reset_logging() -> None:
    # A fresh interpreter has no logging configuration; the zygote's goes.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _set_thread_count(wanted: int) -> None:
    # The zygote ran no torch operation, so no thread pool exists yet; the count set
    # here is what this worker's pools will have (torch read the zygote's env at import).
    # Setting a count above one starts a pool of threads for torch's mobile kernels at
    # once: only a count that differs from the zygote's is set.
    import torch

    if wanted and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def _log_spawn(launcher_started: float) -> None:
    # The configuration MMS's worker script makes first thing (a no-op for it then).
    logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO)
    _log_phase(
        "spawn",
        time.time() - launcher_started,
        f"from the launcher's start to a worker forked from the warm parent, pid {os.getpid()}",
    )


def _log_phase(phase: str, seconds: float, detail: str) -> None:
    logger.info("LOAD phase %s: %.1f ms (%s)", phase, seconds * 1000, detail)


def _import_handler(argv: list[str]) -> None:
    spec = option(argv, "--handler")
    if spec is None:
        return
    module = spec.split(":", 1)[0].removesuffix(".py").split("/")[-1]  # as MMS's loader does
    preloaded = module in sys.modules
    started = time.monotonic()
    try:
        importlib.import_module(module)
    except Exception:
        return
    how = "imported in the warm parent" if preloaded else "imported by this worker"
    _log_phase("handler import", time.monotonic() - started, f"{module}, {how}")


def _start_mms_worker(argv: list[str], conn_fd: int, feed_fd: int, connections: set[int]) -> None:
    """What MMS's backend does for a connection in the process it forks for it."""
    from mms.arg_parser import ArgParser
    from mms.model_service_worker import MXNetModelServiceWorker

    # The backend's own options, read as its parser reads them (the zygote checked that
    # the socket is a unix one).
    sock_name = str(option(argv, "--sock-name"))
    preload = ArgParser.str2bool(option(argv, "--preload-model") or "false")
    # Its constructor removes the socket at the path it is given (a backend's start), and
    # logs "Listening on port", the backend's line: it gets a path that does not exist,
    # and no log.
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.setLevel(logging.WARNING)
    try:
        worker = MXNetModelServiceWorker(
            "unix",
            f"{sock_name}.{os.getpid()}",
            None,
            None,
            None,
            preload,
            option(argv, "--tmp-dir"),
        )
    finally:
        for handler in handlers:
            handler.setLevel(logging.NOTSET)
    worker.socket_name = sock_name  # what its SIGTERM handler removes, as a stock one's
    if feed_fd >= 0:
        SharedModel(worker, connections).serve_feed(socket.socket(fileno=feed_fd))
    try:
        worker.start_worker(socket.socket(fileno=conn_fd))  # ends with sys.exit
    finally:
        # MMS removes its log pipes after flushing stdout, which fails (and skips that)
        # when MMS closed its end first: as it does once it unloads the model.
        for fifo in (worker.out, worker.err):
            if fifo:
                with contextlib.suppress(OSError):
                    os.remove(fifo)


def _exit_status(run: Callable[[], object]) -> int:
    try:
        run()
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
