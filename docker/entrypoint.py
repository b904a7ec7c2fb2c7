"""The image's entrypoint (PID 1).

``serve [ARGS]``  runs ``mme serve ARGS`` and blocks until it exits; its exit status is the
                  container's. SIGTERM/SIGINT are passed on, so the server stops cleanly. A start
                  that fails (the server says so by its exit status: it never answered
                  ``/ping``) is retried a few times (MME_START_ATTEMPTS, default 3).
anything else     is run in place of this script (exec), so its exit status comes back as is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from retrying import retry

from mme.server import START_FAILED_EXIT
from mme.settings import Settings, SettingsError

RETRY_WAIT_MS = 2000
POLL_S = 0.2
# The server gives MMS 20 s to stop; SageMaker sends SIGKILL 30 s after SIGTERM.
KILL_AFTER_S = 25.0
USAGE_EXIT = 2  # argparse and configuration errors: retrying cannot help


def say(message: str) -> None:
    """One line on stderr, marked as ours."""
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as shells report


class StartFailedError(Exception):
    """The server exited before it ever answered ``/ping``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the model server exited with {code} before it answered /ping")
        self.code = code


class Supervisor:
    """Runs ``mme serve`` as a child, passes signals on and reaps every zombie (we are PID 1)."""

    def __init__(self, serve_args: Sequence[str], settings: Settings) -> None:
        self.serve_args = list(serve_args)
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_requested_at: float | None = None
        self.attempts = settings.start_attempts
        self.attempt = 0

    def on_signal(self, signo: int, _frame: FrameType | None) -> None:
        """Remember the stop and pass the signal to the server."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            say(f"got {signal.Signals(signo).name}: stopping the model server")
        self._signal_child(signo)

    def _signal_child(self, signo: int) -> None:
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, signo)

    def _reap(self) -> int | None:
        """Reap finished processes; the server's exit code once it has exited, else None."""
        assert self.child is not None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return self.child.returncode
            if pid == 0:
                return None
            if pid == self.child.pid:
                self.child.returncode = _exit_code(status)
                return self.child.returncode

    def run_once(self) -> int:
        """Start the server and wait for it; raise StartFailedError if it never got healthy."""
        self.attempt += 1
        command = [sys.executable, "-m", "mme.cli", "serve", *self.serve_args]
        self.child = subprocess.Popen(command)
        while (code := self._reap()) is None:
            stopping_since = self.stop_requested_at
            if stopping_since is not None and time.monotonic() - stopping_since > KILL_AFTER_S:
                say(f"the model server did not stop within {KILL_AFTER_S:.0f} s: killing it")
                self._signal_child(signal.SIGKILL)
            time.sleep(POLL_S)
        if self.stop_requested_at is None and code == START_FAILED_EXIT:
            raise StartFailedError(code)
        return code

    def _retry_start(self, error: Exception) -> bool:
        if not isinstance(error, StartFailedError) or self.stop_requested_at is not None:
            return False
        if self.attempt < self.attempts:
            say(f"{error}; trying again in {RETRY_WAIT_MS / 1000:.0f} s")
        return True

    def serve(self) -> int:
        """Run the server with a bounded retry of failed starts; return its exit status."""
        run = retry(
            stop_max_attempt_number=self.attempts,
            wait_fixed=RETRY_WAIT_MS,
            retry_on_exception=self._retry_start,
        )(self.run_once)
        try:
            return int(run())
        except StartFailedError as error:
            say(f"{error}; giving up after {self.attempt} attempt(s)")
            return error.code


def run_command(argv: Sequence[str]) -> int:
    """Replace this process with ``argv``; return a shell-like status if it cannot start."""
    try:
        os.execvp(argv[0], list(argv))
    except FileNotFoundError:
        say(f"{argv[0]}: command not found")
        return 127
    except PermissionError:
        say(f"{argv[0]}: permission denied")
        return 126


def main(argv: Sequence[str]) -> int:
    """Dispatch on the first argument: ``serve`` or a command to run."""
    if argv and argv[0] != "serve":
        return run_command(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        say(f"configuration error: {exc}")
        return USAGE_EXIT
    supervisor = Supervisor(argv[1:], settings)
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, supervisor.on_signal)
    return supervisor.serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
