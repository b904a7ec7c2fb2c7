"""The zygote as `mme serve` sees it: started beside Java, waited for, and stopped.

It runs in a session and process group of its own (Java's group is in another session,
which a process cannot join), and its children stay in that group: stopping it is
one SIGKILL to the group, after MMS has stopped (launchers relay MMS's SIGTERM to
their children before that). A zygote that dies while the server runs (the kernel's
OOM killer picks big processes) is replaced by a new one: the workers it forked go on
serving (each dies with its launcher, see :mod:`mme.prefork.child`), new workers come
from the new zygote, and :meth:`ZygoteProcess.stop` kills the old group too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from mme.lifetime import dying_with_parent
from mme.prefork.launcher import write_launcher
from mme.prefork.proctitle import ROOM_ARGUMENT

SOCKET_NAME = "prefork.sock"
LAUNCHER_NAME = "python-prefork"
STOP_WAIT_S = 5.0
WATCH_INTERVAL_S = 0.5
STABLE_AFTER_S = 60.0  # a zygote that lived this long resets the restart back-off
MAX_BACKOFF_S = 30.0

logger = logging.getLogger(__name__)


class ZygoteError(RuntimeError):
    """The zygote could not start, or exited."""


class ZygoteProcess:
    """One zygote per server, with its socket and launcher in the server's temp folder."""

    def __init__(self, temp_dir: str) -> None:
        if os.statvfs(temp_dir).f_flag & os.ST_NOEXEC:
            raise ZygoteError(
                f"{temp_dir} is on a noexec file system, so the workers' "
                "launcher cannot run from it"
            )
        self.socket_path = os.path.join(temp_dir, SOCKET_NAME)
        self.launcher = write_launcher(os.path.join(temp_dir, LAUNCHER_NAME), self.socket_path)
        self._temp_dir = temp_dir
        self._env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # between the watcher's restart and stop()
        self._stopping = threading.Event()
        self._retired: list[int] = []  # process groups of zygotes that died (and their workers)

    def start(self, env: dict[str, str]) -> None:
        """Start the zygote as the leader of a new process group (see :meth:`stop`)."""
        self._env = env
        command = dying_with_parent(
            [sys.executable, "-m", "mme.prefork.zygote", self.socket_path, ROOM_ARGUMENT]
        )
        try:
            self.process = subprocess.Popen(
                command, env=env, cwd=self._temp_dir, start_new_session=True
            )
        except OSError as exc:
            raise ZygoteError(f"cannot start the prefork zygote: {exc}") from exc

    def ready(self) -> bool:
        """Whether the zygote serves launchers; raise ZygoteError if it exited."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise ZygoteError(
                f"the prefork zygote exited with code {code} before it was ready "
                "(see its log above; MME_WORKER_MODE=stock avoids it)"
            )
        return os.path.exists(self.socket_path)

    def watch(self) -> None:
        """From now on, replace the zygote whenever it dies (call once it is ready)."""
        threading.Thread(target=self._watch, daemon=True, name="zygote-watch").start()

    def _watch(self) -> None:
        started, failures = time.monotonic(), 0
        while not self._stopping.wait(WATCH_INTERVAL_S):
            assert self.process is not None
            code = self.process.poll()
            if code is None:
                continue
            failures = 1 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
            delay = min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
            logger.error(
                "the prefork zygote (pid %d) exited with code %s; the workers it "
                "forked go on serving; a new zygote starts in %.0f s",
                self.process.pid,
                code,
                delay,
            )
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.socket_path)  # launchers wait for the new one to bind it
            if self._stopping.wait(delay) or not self._restart():
                return
            started = time.monotonic()

    def _restart(self) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            assert self.process is not None
            self._retired.append(self.process.pid)  # the old workers' process group
            try:
                self.start(self._env)
            except ZygoteError as exc:
                logger.error("%s; new workers are stock workers from now on", exc)
                return False
            return True

    def stop(self) -> None:
        """Kill the zygote and every worker forked from it (or from a zygote it replaced)."""
        self._stopping.set()
        with self._lock:
            if self.process is None:
                return
            for pgid in [*self._retired, self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            try:
                self.process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
