"""The zygote as `mme serve` sees it: started beside Java, waited for, and stopped.

It runs in a session and process group of its own (Java's group is in another session,
which a process cannot join), and its children stay in that group: stopping it is
one SIGKILL to the group, after MMS has stopped (launchers relay MMS's SIGTERM to
their children before that).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from mme.prefork.launcher import write_launcher
from mme.prefork.proctitle import ROOM_ARGUMENT

SOCKET_NAME = "prefork.sock"
LAUNCHER_NAME = "python-prefork"
STOP_WAIT_S = 5.0


class ZygoteError(RuntimeError):
    """The zygote could not start, or exited."""


class ZygoteProcess:
    """One zygote per server, with its socket and launcher in the server's temp folder."""

    def __init__(self, temp_dir: str) -> None:
        if os.statvfs(temp_dir).f_flag & os.ST_NOEXEC:
            raise ZygoteError(f"{temp_dir} is on a noexec file system, so the workers' "
                              "launcher cannot run from it")
        self.socket_path = os.path.join(temp_dir, SOCKET_NAME)
        self.launcher = write_launcher(os.path.join(temp_dir, LAUNCHER_NAME), self.socket_path)
        self._temp_dir = temp_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        """Start the zygote as the leader of a new process group (see :meth:`stop`)."""
        command = [sys.executable, "-m", "mme.prefork.zygote", self.socket_path, ROOM_ARGUMENT]
        try:
            self.process = subprocess.Popen(command, env=env, cwd=self._temp_dir,
                                            start_new_session=True)
        except OSError as exc:
            raise ZygoteError(f"cannot start the prefork zygote: {exc}") from exc

    def ready(self) -> bool:
        """Whether the zygote serves launchers; raise ZygoteError if it exited."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise ZygoteError(f"the prefork zygote exited with code {code} before it was ready "
                              "(see its log above; MME_WORKER_MODE=stock avoids it)")
        return os.path.exists(self.socket_path)

    def stop(self) -> None:
        """Kill the zygote and every worker forked from it, and collect its exit status."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            try:
                self.process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
