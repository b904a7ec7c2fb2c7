"""What MMS runs as ``<python>``: asks the zygote for a worker, then stands in for it.

MMS starts, watches and kills this process as if it were the worker. So it passes its
standard streams to the zygote, then replaces itself (exec, same pid) with a POSIX shell
script, the *stand-in*, which costs a fifth of a MiB where a waiting Python costs five:
with thousands of models loaded, one stand-in per model is the price of keeping MMS's
view of its workers. The stand-in

* relays the signals it gets to the child, and ends with the child's exit status (dying
  of the same signal when the child did), as the zygote tells it on fd 3;
* when the zygote serves MMS's backend itself (``pid 0``, see :mod:`mme.prefork.backend`),
  is that backend for MMS: it dies of SIGTERM as MMS's backend does;
* dies with its connection held open by the zygote and the child: its death (MMS's UNLOAD
  kills it) closes the connection, on which the zygote and the child end the worker.

The handshake must start in milliseconds: it runs as ``python -I -S`` and imports only the
standard library and :mod:`mme.prefork.protocol`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from mme.prefork import protocol

RELAYED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
ZYGOTE_WAIT_S = 120.0  # as long as MMS waits for a worker to start
CONNECT_POLL_S = 0.05
LOST_ZYGOTE_EXIT_CODE = 70  # EX_SOFTWARE: the zygote went away while the child ran
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ZYGOTE_FD = 3  # where the stand-in reads the zygote's replies
SHELL = "/bin/sh"
STAND_IN_SUFFIX = ".stand-in"

_SCRIPT = """#!{python} -IS
# Written by `mme serve` (mme.prefork.launcher): MMS runs this as its Python for workers.
import sys
sys.path.insert(0, {package_root!r})
from mme.prefork.launcher import main
sys.exit(main({socket_path!r}, {python!r}))
"""

# $1: the launcher's path (so that tools still find the launcher by its command line), $2:
# the child's pid, 0 when the zygote serves MMS's backend itself, $3: signals that came
# before this script ran; then MMS's arguments, for `ps`. fd 3: the zygote's replies.
# A trapped signal interrupts `read`, which then fails: only a failure without one is the
# end of the connection (the zygote is gone, and so is the child, which held it too).
_STAND_IN = """# Written by `mme serve` (mme.prefork.launcher): stands in for a forked worker.
child=$2 last= interrupted=
relay() { last=$1 interrupted=1; kill -"$1" "$child" 2>/dev/null; }
die_of() { trap - "$1"; kill -"$1" $$; exit $((128 + $1)); }
if [ "$child" != 0 ]; then
    for signo in __SIGNALS__; do trap "relay $signo" "$signo"; done
    for signo in $3; do relay "$signo"; done
else
    for signo in $3; do die_of "$signo"; done
fi
while :; do
    interrupted=
    if IFS= read -r reply <&3; then
        case $reply in
            "exit "*) exit "${reply#exit }" ;;
            "signal "*) die_of "${reply#signal }" ;;
        esac
    elif [ -z "$interrupted" ]; then
        break
    fi
done
[ -n "$last" ] && die_of "$last"
echo "mme prefork: the worker ended after its zygote" >&2
exit __LOST__
"""


def write_launcher(path: str, socket_path: str) -> str:
    """Write the launcher executable that MMS gets as ``--python`` (and its stand-in script
    beside it); return its path."""
    import mme  # only here, in `mme serve`: the launcher itself never needs it

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(mme.__file__)))
    with open(path, "w", encoding="utf-8") as out:
        out.write(
            _SCRIPT.format(
                python=sys.executable, package_root=package_root, socket_path=socket_path
            )
        )
    os.chmod(path, 0o755)
    with open(path + STAND_IN_SUFFIX, "w", encoding="utf-8") as out:
        out.write(
            _STAND_IN.replace("__SIGNALS__", _numbers(RELAYED_SIGNALS)).replace(
                "__LOST__", str(LOST_ZYGOTE_EXIT_CODE)
            )
        )
    return path


def main(socket_path: str, python: str) -> int:
    """Run one worker through the zygote at ``socket_path``; fall back to ``python``."""
    started = time.time()
    _die_with_mms()
    received: list[int] = []
    for signo in RELAYED_SIGNALS:
        signal.signal(signo, lambda signo, _frame: received.append(signo))
    sock = _connect(socket_path)
    if sock is None:
        _run_stock_worker(python, received, "the prefork zygote is not running")
    request = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "started": started,
    }
    protocol.send_request(sock, request, protocol.STD_FDS)
    child = protocol.receive_pid(sock)
    if child is None:
        sys.stderr.write("mme prefork: the zygote went away before the worker started\n")
        return LOST_ZYGOTE_EXIT_CODE
    _become_stand_in(sock, child, received)


def _die_with_mms() -> None:
    # If MMS is killed outright, this process is killed too (the parent-death signal
    # outlives the exec), and with it the worker: nothing of the server outlives it.
    import ctypes  # here: it costs a millisecond, which only this process pays

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _connect(socket_path: str) -> socket.socket | None:
    deadline = time.monotonic() + ZYGOTE_WAIT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path)
            return sock
        except FileNotFoundError:
            sock.close()  # the zygote is still importing: it binds only when ready
            if time.monotonic() > deadline:
                return None
            time.sleep(CONNECT_POLL_S)
        except OSError:
            sock.close()  # refused: the zygote died
            return None


def _restore_signals() -> None:
    """Give the relayed signals their default action again, without losing one.

    Blocking runs the handlers of those that came already, so the caller's list of received
    signals is complete;
    one that comes from now on ends this process, which ends the worker too (the zygote and
    the child see the connection close). The shell's traps take over after the exec.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED_SIGNALS)
    for relayed in RELAYED_SIGNALS:
        signal.signal(relayed, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RELAYED_SIGNALS)


def _run_stock_worker(python: str, received: list[int], why: str) -> NoReturn:
    sys.stderr.write(f"mme prefork: {why}; starting a stock worker instead\n")
    sys.stderr.flush()
    _restore_signals()
    for signo in received:
        os.kill(os.getpid(), signo)  # what came before takes effect now
    os.execv(python, [python, *sys.argv[1:]])


def _numbers(signals: Iterable[int]) -> str:
    return " ".join(str(int(signo)) for signo in signals)


def _become_stand_in(sock: socket.socket, child: int, received: list[int]) -> NoReturn:
    _restore_signals()
    if sock.fileno() == ZYGOTE_FD:
        os.set_inheritable(ZYGOTE_FD, True)  # sockets are opened close-on-exec
    else:
        os.dup2(sock.fileno(), ZYGOTE_FD)  # inheritable
    script = sys.argv[0] + STAND_IN_SUFFIX
    arguments: list[Any] = [
        SHELL,
        script,
        sys.argv[0],
        str(child),
        _numbers(received),
        *sys.argv[1:],
    ]
    try:
        os.execv(SHELL, arguments)
    except OSError as exc:
        sys.stderr.write(f"mme prefork: cannot run the stand-in ({SHELL} {script}): {exc}\n")
        os._exit(LOST_ZYGOTE_EXIT_CODE)
