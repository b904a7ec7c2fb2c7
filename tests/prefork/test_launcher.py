"""The launcher and the zygote without MMS: streams, exit status, signals, fallback.

Each test runs the launcher that `mme serve` writes, as MMS would, with a small script
in place of MMS's worker script.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from harness.polling import wait_until
from harness.processes import alive
from mme.prefork.launcher import write_launcher
from mme.prefork.zygote_process import ZygoteProcess
from mme.worker_config import WorkerConfig

WORKER = """
    import json, os, signal, sys, time
    what = sys.argv[1]
    print("out", what, os.getpid(), flush=True)
    print("err", what, file=sys.stderr, flush=True)
    if what == "describe":
        import torch
        print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv, "path": sys.path,
                          "marker": os.environ.get("PREFORK_TEST_MARKER"),
                          "threads": torch.get_num_threads(), "ppid": os.getppid()}))
    elif what == "exit-3":
        sys.exit(3)
    elif what == "kill-9":
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "sleep":
        time.sleep(120)
"""
TIMEOUT_S = 60


def _script(folder: Path) -> Path:
    path = folder / "fake_worker.py"
    path.write_text(textwrap.dedent(WORKER))
    return path


def _env(**extra: str) -> dict[str, str]:
    # As Settings.worker_environment sets them for every worker.
    return {**os.environ, **WorkerConfig(num_threads=1).to_env(), "OMP_NUM_THREADS": "1", **extra}


def _run(
    launcher: str, script: Path, what: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [launcher, str(script), what],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_the_child_gets_the_streams_argv_cwd_env_and_threads_of_a_fresh_worker(
    zygote: ZygoteProcess, scratch: Path
) -> None:
    script = _script(scratch)
    extra = scratch / "extra"
    env = _env(PREFORK_TEST_MARKER="m-42", PYTHONPATH=str(extra))
    forked = _run(zygote.launcher, script, "describe", scratch, env)
    fresh = subprocess.run(
        [sys.executable, str(script), "describe"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert forked.returncode == fresh.returncode == 0, forked.stderr
    assert forked.stderr == fresh.stderr == "err describe\n"
    seen, expected = (
        json.loads(forked.stdout.splitlines()[1]),
        json.loads(fresh.stdout.splitlines()[1]),
    )
    for key in ("cwd", "argv", "path", "marker", "threads"):
        assert seen[key] == expected[key], key
    assert seen["threads"] == 1  # the request's thread count, not the zygote's 2
    assert zygote.process is not None
    assert seen["ppid"] == zygote.process.pid  # forked, not started


def test_an_exit_status_and_a_death_by_signal_reach_the_launchers_parent(
    zygote: ZygoteProcess, scratch: Path
) -> None:
    script = _script(scratch)
    assert _run(zygote.launcher, script, "exit-3", scratch).returncode == 3
    killed = _run(zygote.launcher, script, "kill-9", scratch)
    assert killed.returncode == -signal.SIGKILL  # so MMS reads 137, as for a stock worker
    assert killed.stdout.startswith("out kill-9")


def _sleeper(zygote: ZygoteProcess, scratch: Path) -> tuple[subprocess.Popen[str], int]:
    launcher = subprocess.Popen(
        [zygote.launcher, str(_script(scratch)), "sleep"],
        cwd=scratch,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    _out, _what, pid = launcher.stdout.readline().split()
    return launcher, int(pid)


def _gone(pid: int, within_s: float = 10) -> bool:
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return wait_until(lambda: not alive(process), within_s, interval_s=0.05)


def test_sigterm_to_the_launcher_is_relayed_to_the_child(
    zygote: ZygoteProcess, scratch: Path
) -> None:
    launcher, child = _sleeper(zygote, scratch)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=TIMEOUT_S) == -signal.SIGTERM
    assert _gone(child)


def test_a_launcher_killed_with_sigkill_takes_its_child_along(
    zygote: ZygoteProcess, scratch: Path
) -> None:
    launcher, child = _sleeper(zygote, scratch)
    assert psutil.pid_exists(child)
    launcher.kill()  # what MMS does on UNLOAD
    launcher.wait(timeout=TIMEOUT_S)
    assert _gone(child)


def test_without_a_zygote_the_launcher_starts_a_stock_worker(scratch: Path) -> None:
    folder = Path(os.path.realpath(scratch))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(folder / "z.sock"))  # a socket file that nobody listens on
    try:
        launcher = write_launcher(str(folder / "python-prefork"), str(folder / "z.sock"))
        result = _run(launcher, _script(folder), "exit-3", folder)
    finally:
        dead.close()
    assert result.returncode == 3
    assert result.stdout.startswith("out exit-3")
    assert "the prefork zygote is not running; starting a stock worker instead" in result.stderr


def test_a_bad_request_leaves_the_zygote_serving(zygote: ZygoteProcess, scratch: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stranger:
        stranger.connect(zygote.socket_path)
        stranger.sendall(b"not a request")  # no length header worth reading, no fds
    forked = _run(zygote.launcher, _script(scratch), "describe", scratch)
    assert forked.returncode == 0
    assert zygote.process is not None and zygote.process.poll() is None
    assert json.loads(forked.stdout.splitlines()[1])["ppid"] == zygote.process.pid
