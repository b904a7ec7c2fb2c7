"""`mme serve` in prefork mode, end to end: real MMS, real workers forked from the zygote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psutil
import requests

from harness.models import make_model_dir
from harness.polling import wait_until
from harness.processes import alive, cmdline, model_processes
from harness.servers import NativeServer
from tests.prefork.conftest import ready_log

TIMEOUT_S = 120
WITHIN_S = 30  # for what follows at once: a log line, a process that ends

# Writes to both streams while loading and while answering; answers with its pid,
# after sleeping as many seconds as the body says.
CHATTY = """
    import json, os, sys, time
    def model_fn(model_dir):
        print("CHATTY-LOAD-OUT", flush=True)
        print("CHATTY-LOAD-ERR", file=sys.stderr, flush=True)
        return model_dir
    def transform_fn(model_dir, data, content_type, accept):
        print("CHATTY-INVOKE-OUT", flush=True)
        marker = os.path.join(model_dir, f"sleeping-{os.getpid()}")  # the test waits for it
        open(marker, "w").close()
        try:
            time.sleep(float(data or 0))
        finally:
            os.remove(marker)
        return json.dumps({"pid": os.getpid()}), "application/json"
"""


def _load(server: NativeServer, name: str) -> requests.Response:
    return requests.post(
        f"{server.url}/models",
        timeout=TIMEOUT_S,
        json={"model_name": name, "url": server.model_url(name)},
    )


def _invoke(server: NativeServer, name: str, seconds: float = 0) -> requests.Response:
    return requests.post(
        f"{server.url}/models/{name}/invoke",
        data=str(seconds).encode(),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )


def _loaded(server: NativeServer, name: str) -> None:
    make_model_dir(server.models_root, name, {"inference.py": CHATTY}, weights=False)
    ready_log(server)
    answer = _load(server, name)
    assert answer.status_code == 200, answer.text


def _zygote(server: NativeServer) -> psutil.Process:
    found = [p for p in server.descendants() if "mme.prefork.zygote" in cmdline(p)]
    assert len(found) == 1, [cmdline(p)[:3] for p in server.descendants()]
    return found[0]


def test_workers_are_forked_from_the_zygote_and_their_output_reaches_the_log(
    server: NativeServer,
) -> None:
    _loaded(server, "chatty")
    answer = _invoke(server, "chatty")
    assert answer.status_code == 200
    worker = psutil.Process(answer.json()["pid"])
    # The zygote serves MMS's backend and forks the worker once MMS connects.
    assert worker.parent().pid == _zygote(server).pid
    args = worker.cmdline()
    assert args[1].endswith("mms/model_service_worker.py")  # reads like a stock worker
    assert args[args.index("--model-name") + 1] == "chatty"
    expected = [
        "CHATTY-LOAD-OUT",
        "CHATTY-LOAD-ERR",
        "CHATTY-INVOKE-OUT",
        "LOAD phase spawn",
        "LOAD phase handler import",
        "LOAD phase model_fn",
    ]
    assert wait_until(lambda: all(line in server.log() for line in expected), WITHIN_S), [
        line for line in expected if line not in server.log()
    ]


def test_a_worker_killed_during_a_request_fails_it_and_the_model_loads_again(
    server: NativeServer,
) -> None:
    _loaded(server, "victim")
    worker_pid = _invoke(server, "victim").json()["pid"]
    answers: list[requests.Response] = []
    request = threading.Thread(target=lambda: answers.append(_invoke(server, "victim", 60)))
    request.start()
    # Kill it only once the request is in the worker's sleep.
    marker = server.models_root / "victim" / "model" / f"sleeping-{worker_pid}"
    assert wait_until(marker.exists, TIMEOUT_S)
    os.kill(worker_pid, signal.SIGKILL)
    request.join(timeout=TIMEOUT_S)
    assert answers and answers[0].status_code >= 500
    assert requests.delete(f"{server.url}/models/victim", timeout=TIMEOUT_S).status_code == 200
    assert _load(server, "victim").status_code == 200
    again = _invoke(server, "victim")
    assert again.status_code == 200
    assert again.json()["pid"] != worker_pid


def test_unload_leaves_no_process_behind(server: NativeServer) -> None:
    _loaded(server, "brief")
    assert _invoke(server, "brief").status_code == 200
    family = model_processes(server.descendants(), "brief")
    assert len(family) == 2  # the launcher's stand-in (MMS's backend to MMS), the worker
    assert requests.delete(f"{server.url}/models/brief", timeout=TIMEOUT_S).status_code == 200
    assert wait_until(lambda: not any(alive(p) for p in family), WITHIN_S)
    assert alive(_zygote(server))


# What the zygote does (import, fork), then what it must never do (a torch operation).
PROBE = """
import os, torch
from mme.prefork.preload import preload
def threads():
    return len(os.listdir("/proc/self/task"))
def fork_once():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
preload()
fork_once()  # numpy's OpenBLAS stops its threads around a fork (and starts them lazily)
before = threads()
torch.ones(4000, 4000).sum(dim=1)  # a parallel torch operation starts the thread pool
fork_once()
print(before, threads())
"""


def test_the_zygote_never_started_torch_threads(server: NativeServer) -> None:
    _loaded(server, "threads")
    for _ in range(3):
        assert _invoke(server, "threads").status_code == 200
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    )
    imported_only, after_an_operation = map(int, probe.stdout.split())
    assert after_an_operation > imported_only  # the probe sees a pool, even across a fork
    assert _zygote(server).num_threads() == imported_only


def test_mme_serve_reports_ready_only_once_the_zygote_is(server: NativeServer) -> None:
    ready_log(server)
    log = server.log()
    assert "prefork workers" in log
    assert log.index("prefork: the warm parent") < log.index("the model server is healthy on")


def test_a_zygote_that_dies_is_replaced_and_its_workers_serve_on(server: NativeServer) -> None:
    _loaded(server, "survivor")
    before = _invoke(server, "survivor").json()["pid"]
    family = model_processes(server.descendants(), "survivor")
    old = _zygote(server)
    old.kill()  # as the kernel's OOM killer would

    assert wait_until(
        lambda: any(
            "mme.prefork.zygote" in cmdline(p) and p.pid != old.pid for p in server.descendants()
        ),
        WITHIN_S,
    )
    assert f"the prefork zygote (pid {old.pid}) exited" in server.log()
    new = _zygote(server)
    assert _invoke(server, "survivor").json()["pid"] == before  # never noticed
    _loaded(server, "newcomer")
    answer = _invoke(server, "newcomer")
    assert answer.status_code == 200
    assert psutil.Process(answer.json()["pid"]).parent().pid == new.pid

    # Without its zygote, the old worker still goes when MMS unloads it (kills its launcher).
    assert requests.delete(f"{server.url}/models/survivor", timeout=TIMEOUT_S).status_code == 200
    assert wait_until(lambda: not any(alive(p) for p in family), WITHIN_S)
    assert _invoke(server, "newcomer").status_code == 200
