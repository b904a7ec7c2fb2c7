"""Hundreds of tiny models in one `mme serve` (prefork workers): each costs two processes and
a few MiB; unloading them all leaves no process, thread, file or memory of theirs behind;
past a limit, a LOAD gets 507 and nothing of it stays."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from harness.models import expected_tiny, make_tiny_model
from harness.polling import settle
from harness.proc import fd_groups, memory_mib, thread_groups
from harness.processes import cmdline, model_processes, model_workers
from harness.servers import NativeServer
from tests.prefork.conftest import ready_log

MODELS = 200  # the whole test takes about a minute on two cores
TIMEOUT_S = 120
SETTLE_S = 30.0
ROWS = [[float(i % 5) for i in range(16)]]
MAX_MODELS = 3

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model's folder, which every model name loads."""
    root = tmp_path_factory.mktemp("tiny")
    root.chmod(0o755)
    return make_tiny_model(root / "model")


def _server(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> NativeServer:
    root = tmp_path_factory.mktemp("models")
    return NativeServer(root, env={"MME_WORKER_MODE": "prefork", **env}).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """`mme serve` with prefork workers and the default limits."""
    instance = _server(tmp_path_factory, {})
    try:
        yield instance
    finally:
        instance.stop()


def _load(
    session: requests.Session, server: NativeServer, name: str, url: Path
) -> requests.Response:
    return session.post(
        f"{server.url}/models", json={"model_name": name, "url": str(url)}, timeout=TIMEOUT_S
    )


def _unload(session: requests.Session, server: NativeServer, name: str) -> requests.Response:
    return session.delete(f"{server.url}/models/{name}", timeout=TIMEOUT_S)


def _invoke(session: requests.Session, server: NativeServer, name: str) -> requests.Response:
    return session.post(
        f"{server.url}/models/{name}/invoke",
        data=json.dumps(ROWS),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=TIMEOUT_S,
    )


@dataclass
class Snapshot:
    """What the server's processes hold at one moment."""

    model_processes: int  # processes that serve a model (stand-ins and workers)
    model_uss_mib: float  # their private memory
    worker_threads: list[int]  # threads of each worker
    zygote_fds: dict[str, int]
    zygote_threads: int
    zygote_uss_mib: float
    java_log_readers: int  # MMS's threads that read a worker's output
    java_fds: dict[str, int]
    temp_files: list[str]  # MMS's sockets and log pipes in the server's folder


def _snapshot(server: NativeServer) -> Snapshot:
    processes = server.descendants()
    models = model_processes(processes)
    zygote = next(p for p in processes if "mme.prefork.zygote" in cmdline(p))
    java = next(p for p in processes if os.path.basename((cmdline(p) or [""])[0]) == "java")
    workers = model_workers(processes)
    temp_dir = next(a.split("=", 1)[1] for a in cmdline(java) if a.startswith("-Djava.io.tmpdir"))
    return Snapshot(
        model_processes=len(models),
        model_uss_mib=sum(_uss_mib(p) for p in models),
        worker_threads=[p.num_threads() for p in workers],
        zygote_fds=fd_groups(zygote.pid),
        zygote_threads=zygote.num_threads(),
        zygote_uss_mib=memory_mib(zygote.pid)["uss_mib"],
        java_log_readers=sum(
            count
            for name, count in thread_groups(java.pid).items()
            if name.endswith(("-stdout", "-stderr"))
        ),
        java_fds=fd_groups(java.pid),
        temp_files=sorted(
            f
            for f in os.listdir(temp_dir)
            if f.startswith(".mms.sock") or f.endswith(("-stdout", "-stderr"))
        ),
    )


def _uss_mib(process: psutil.Process) -> float:
    try:
        return float(memory_mib(process.pid)["uss_mib"])
    except OSError:
        return 0.0


def _settled(server: NativeServer, done: Callable[[Snapshot], bool]) -> Snapshot:
    """Snapshots until ``done(snapshot)``: MMS reaps what it killed in its own time."""
    return settle(lambda: _snapshot(server), done, SETTLE_S, interval_s=0.5)


def test_hundreds_of_tiny_models_load_answer_and_unload_leaving_nothing(
    server: NativeServer, tiny: Path
) -> None:
    ready_log(server)
    session = requests.Session()
    # One model first: what MMS and the zygote start once (pools, caches) is then counted
    # in the snapshot before.
    assert _load(session, server, "warm-up", tiny).status_code == 200
    assert _invoke(session, server, "warm-up").status_code == 200
    assert _unload(session, server, "warm-up").status_code == 200
    before = _settled(server, lambda s: s.model_processes == 0 and not s.java_log_readers)

    names = [f"tiny-{i}" for i in range(MODELS)]
    for name in names:
        answer = _load(session, server, name, tiny)
        assert answer.status_code == 200, (name, answer.text)
    for name in names:
        answer = _invoke(session, server, name)
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json() == {"model": name, "output": expected_tiny(ROWS)}
    loaded = _snapshot(server)
    # Per model: the process MMS started (a shell stand-in) and the worker, which runs its
    # main thread and its watchdog; a few MiB of private memory between them.
    assert loaded.model_processes == 2 * MODELS
    assert max(loaded.worker_threads) <= 2
    assert loaded.model_uss_mib / MODELS < 10, loaded.model_uss_mib / MODELS

    for name in names:
        answer = _unload(session, server, name)
        assert answer.status_code == 200, (name, answer.text)
    after = _settled(
        server,
        lambda s: (
            s.model_processes == 0 and not s.java_log_readers and s.java_fds == before.java_fds
        ),
    )
    assert after.model_processes == 0
    assert after.java_log_readers == 0
    assert after.java_fds == before.java_fds
    assert after.zygote_fds == before.zygote_fds
    assert after.zygote_threads == before.zygote_threads == 1
    assert after.temp_files == before.temp_files
    # The zygote keeps nothing per model: it grows once, as its tables for hundreds of
    # backends do (Python's dicts do not shrink), and not again (round after round).
    assert after.zygote_uss_mib <= before.zygote_uss_mib + 4


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """`mme serve` that holds at most MAX_MODELS models."""
    instance = _server(tmp_path_factory, {"MME_MAX_LOADED_MODELS": str(MAX_MODELS)})
    try:
        yield instance
    finally:
        instance.stop()


def test_a_load_past_the_maximum_gets_507_and_loads_once_a_model_is_unloaded(
    limited: NativeServer, tiny: Path
) -> None:
    ready_log(limited)
    assert f"capacity: up to {MAX_MODELS} models (MME_MAX_LOADED_MODELS)" in limited.log()
    assert "RLIMIT_NOFILE" in limited.log() and "kernel.pid_max" in limited.log()
    session = requests.Session()
    for i in range(MAX_MODELS):
        assert _load(session, limited, f"m{i}", tiny).status_code == 200
    refused = _load(session, limited, "one-too-many", tiny)
    assert refused.status_code == 507
    assert refused.json()["message"] == (
        f"the server holds {MAX_MODELS} models, as many as MME_MAX_LOADED_MODELS allows "
        f"({MAX_MODELS} models); unload a model first"
    )
    # Nothing of it: not registered, no process.
    assert session.get(f"{limited.url}/models/one-too-many", timeout=TIMEOUT_S).status_code == 404
    assert not model_processes(limited.descendants(), "one-too-many")
    assert _invoke(session, limited, "m0").status_code == 200  # the others serve on

    assert _unload(session, limited, "m0").status_code == 200
    assert _load(session, limited, "one-too-many", tiny).status_code == 200  # SageMaker's retry
    assert _invoke(session, limited, "one-too-many").status_code == 200
