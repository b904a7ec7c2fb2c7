"""The local endpoint's model registry, in process, against a stand-in container.

The stand-in answers the container's multi-model API as `mme serve` does: LOAD 200 (409 for
a model it has), 507 when it is full, and a failed LOAD leaves nothing registered; INVOKE
404 for a model it does not have. Tests script what it does beyond that.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from mme.endpoint.artifacts import LocalStore
from mme.endpoint.container_api import Answer, ContainerClient
from mme.endpoint.disk_cache import DiskCache
from mme.endpoint.errors import ModelNotReadyError, ServiceUnavailableError
from mme.endpoint.extraction import ExtractionLimits
from mme.endpoint.loader import LoadFailedError, ModelLoader
from mme.endpoint.metrics import Metrics
from mme.endpoint.registry import Lease, ModelRegistry, RegistryConfig
from tests.endpoint.archives import files_archive
from tests.http_threads import JSONHandler, LoopbackHTTPServer, serving

TIMEOUT_S = 20
MODELS = ("a.tar.gz", "b.tar.gz", "c.tar.gz")


class StandInContainer(LoopbackHTTPServer):
    """The container's multi-model API, with models that are only names."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.lock = threading.Lock()
        self.capacity = 100  # models it can hold; one more is 507
        self.loaded: set[str] = set()
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.load_failures: dict[str, list[int]] = {}  # model: statuses its next LOADs get
        self.load_delay_s = 0.0
        self.invoked = threading.Event()

    def load(self, name: str, url: str) -> tuple[int, dict[str, object]]:
        time.sleep(self.load_delay_s)
        with self.lock:
            self.loads.append(name)
            assert Path(url).is_dir(), f"LOAD of {name} before its files were there"
            failures = self.load_failures.get(name)
            if failures:
                status = failures.pop(0)
                return status, {"code": status, "message": f"LOAD of {name} failed"}
            if name in self.loaded:
                return 409, {"code": 409, "message": f"Model {name} is already registered."}
            if len(self.loaded) >= self.capacity:
                return 507, {"code": 507, "message": "System out of memory"}
            self.loaded.add(name)
            return 200, {"status": "Workers scaled"}

    def unload(self, name: str) -> int:
        with self.lock:
            self.unloads.append(name)
            if name not in self.loaded:
                return 404
            self.loaded.discard(name)
            return 200

    def invoke(self, name: str) -> tuple[int, dict[str, object]]:
        with self.lock:
            known = name in self.loaded
        self.invoked.set()
        if not known:
            return 404, {
                "code": 404,
                "type": "ModelNotFoundException",
                "message": f"Model not found: {name}",
            }
        return 200, {"model": name}


class _Handler(JSONHandler):
    server: StandInContainer

    def do_GET(self) -> None:
        self.answer(200, {"status": "Healthy"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/models":
            request = json.loads(body)
            self.answer(*self.server.load(request["model_name"], request["url"]))
        else:
            self.answer(*self.server.invoke(self.path.split("/")[2]))

    def do_DELETE(self) -> None:
        status = self.server.unload(self.path.split("/")[2])
        self.answer(status, {"status": "Model unregistered"} if status == 200 else {})


class CountingStore(LocalStore):
    """A LocalStore that counts the archives it hands out."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetches: list[str] = []

    def fetch(self, target_model: str, destination: Path, max_bytes: int) -> int:
        self.fetches.append(target_model)
        return super().fetch(target_model, destination, max_bytes)


@dataclass
class Setup:
    container: StandInContainer
    client: ContainerClient
    store: CountingStore
    disk: DiskCache
    metrics: Metrics

    def registry(self, config: RegistryConfig | None = None) -> ModelRegistry:
        loader = ModelLoader(self.client, str(self.disk.root), self.metrics)
        return ModelRegistry(
            self.store, self.disk, loader, config or RegistryConfig(), self.metrics
        )

    def invoke(self, registry: ModelRegistry, target_model: str) -> tuple[Answer, Lease]:
        """One call through the registry; the answer and the lease of its last try."""
        leases: list[Lease] = []

        def call(lease: Lease) -> Answer:
            leases.append(lease)
            return self.client.invoke(lease.model_id, b"{}", {"Content-Type": "application/json"})

        answer = registry.serve(target_model, call)
        return answer, leases[-1]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    models = tmp_path / "models"
    for name in MODELS:
        files_archive(models / name, {"model.pt": name.encode()})
    store = CountingStore(models)
    disk = DiskCache(tmp_path / "cache", 1024 * 1024, ExtractionLimits(max_bytes=1024 * 1024))
    with serving(StandInContainer()) as container:
        client = ContainerClient(
            container.url, invoke_timeout_s=TIMEOUT_S, load_timeout_s=TIMEOUT_S
        )
        yield Setup(container, client, store, disk, Metrics("ep", "AllTraffic"))


def _metric(setup: Setup, sample: str) -> float:
    """The value of one sample of /metrics, summed over the models."""
    total = 0.0
    for line in setup.metrics.prometheus().splitlines():
        name, _, value = line.rpartition(" ")
        if name.split("{")[0] == sample:
            total += float(value)
    return total


def test_the_first_call_fetches_and_loads_the_next_one_hits(setup: Setup) -> None:
    registry = setup.registry()

    first, miss = setup.invoke(registry, "a.tar.gz")
    second, hit = setup.invoke(registry, "a.tar.gz")

    assert (first.status, second.status) == (200, 200)
    assert json.loads(first.body) == {"model": registry.model_id("a.tar.gz")}
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert miss.phases.download_us is not None and miss.phases.load_us is not None
    assert setup.store.fetches == ["a.tar.gz"]
    assert setup.container.loads == [registry.model_id("a.tar.gz")]
    assert _metric(setup, "LoadedModelCount") == 1


def test_concurrent_first_calls_share_one_fetch_and_one_load(setup: Setup) -> None:
    registry = setup.registry()
    setup.container.load_delay_s = 0.3

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: setup.invoke(registry, "a.tar.gz")[0], range(4)))

    assert [answer.status for answer in answers] == [200] * 4
    assert setup.store.fetches == ["a.tar.gz"]
    assert len(setup.container.loads) == 1


def test_a_full_container_unloads_the_least_recently_used_and_loads_again(setup: Setup) -> None:
    registry = setup.registry()
    setup.container.capacity = 2
    a, b, c = (registry.model_id(name) for name in MODELS)
    setup.invoke(registry, "a.tar.gz")
    setup.invoke(registry, "b.tar.gz")
    setup.invoke(registry, "a.tar.gz")  # b is now the least recently used

    answer, lease = setup.invoke(registry, "c.tar.gz")

    assert answer.status == 200
    assert setup.container.loaded == {a, c}
    assert setup.container.loads == [a, b, c, c]  # c got 507, then b went
    assert setup.container.unloads == [b]
    assert lease.phases.unload_us is not None
    assert setup.disk.holds(b)  # unloaded models stay on disk
    setup.invoke(registry, "b.tar.gz")
    assert setup.store.fetches == list(MODELS)  # b came from the disk cache


def test_max_loaded_models_unloads_before_the_load(setup: Setup) -> None:
    registry = setup.registry(RegistryConfig(max_loaded_models=1))
    a, b, _ = (registry.model_id(name) for name in MODELS)

    setup.invoke(registry, "a.tar.gz")
    setup.invoke(registry, "b.tar.gz")

    assert setup.container.loaded == {b}
    assert setup.container.loads == [a, b]  # no 507 needed
    assert _metric(setup, "ModelUnloadingTime_count") == 1


def test_a_refused_load_raises_and_leaves_nothing_cached(setup: Setup) -> None:
    registry = setup.registry()
    a = registry.model_id("a.tar.gz")
    setup.container.load_failures[a] = [500]

    with pytest.raises(LoadFailedError) as failed:
        setup.invoke(registry, "a.tar.gz")

    assert (failed.value.status, failed.value.message) == (500, f"LOAD of {a} failed")
    assert not setup.disk.holds(a)
    assert not (setup.disk.root / a).exists()
    # The next call fetches the archive again (a fixed one may have been uploaded).
    assert setup.invoke(registry, "a.tar.gz")[0].status == 200
    assert setup.store.fetches == ["a.tar.gz", "a.tar.gz"]


def test_507_with_nothing_to_unload_is_a_refused_load(setup: Setup) -> None:
    registry = setup.registry()
    setup.container.capacity = 0

    with pytest.raises(LoadFailedError) as failed:
        setup.invoke(registry, "a.tar.gz")

    assert failed.value.status == 507


def test_a_model_already_in_the_container_counts_as_loaded(setup: Setup) -> None:
    registry = setup.registry()
    a = registry.model_id("a.tar.gz")
    setup.container.loaded.add(a)  # loaded by an earlier run of the endpoint: LOAD gets 409

    answer, _ = setup.invoke(registry, "a.tar.gz")

    assert answer.status == 200
    assert setup.container.loads == [a]


def test_a_model_the_container_lost_is_loaded_again_once(setup: Setup) -> None:
    registry = setup.registry()
    a = registry.model_id("a.tar.gz")
    setup.invoke(registry, "a.tar.gz")
    setup.container.loaded.clear()  # as after a restart of the container

    answer, lease = setup.invoke(registry, "a.tar.gz")

    assert answer.status == 200
    assert not lease.cache_hit
    assert setup.container.loads == [a, a]
    assert setup.store.fetches == ["a.tar.gz"]  # from the disk cache


def test_a_model_lost_again_after_its_reload_gives_the_containers_answer(setup: Setup) -> None:
    registry = setup.registry()
    setup.invoke(registry, "a.tar.gz")
    attempts: list[Lease] = []

    def forgetful(lease: Lease) -> Answer:
        attempts.append(lease)
        setup.container.loaded.clear()
        return setup.client.invoke(lease.model_id, b"{}", {})

    answer = registry.serve("a.tar.gz", forgetful)

    assert answer.status == 404  # loaded again once, not over and over
    assert len(attempts) == 2


def test_a_call_that_meets_the_reload_of_a_lost_model_waits_for_it(setup: Setup) -> None:
    # One call finds the model lost (404) and loads it again; another, in flight with the
    # old lease, reaches the container while that LOAD has registered the model but its
    # worker is not up, and gets 503 "No worker is available". Both must succeed.
    registry = setup.registry()
    setup.invoke(registry, "a.tar.gz")
    racers = threading.Barrier(2, timeout=TIMEOUT_S)
    statuses: list[int] = []

    def racing(lease: Lease) -> Answer:
        if lease.losses == 0:
            if racers.wait() == 0:
                setup.container.loaded.clear()
                answer = Answer(404, b'{"message": "Model not found"}')
            else:
                while len(setup.container.loads) < 2:  # the other call's LOAD of it again
                    time.sleep(0.01)
                answer = Answer(503, b'{"message": "No worker is available"}')
        else:
            answer = setup.client.invoke(lease.model_id, b"{}", {})
        statuses.append(answer.status)
        return answer

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: registry.serve("a.tar.gz", racing), range(2)))

    assert [answer.status for answer in answers] == [200, 200]
    assert sorted(statuses) == [200, 200, 404, 503]
    assert len(setup.container.loads) == 2  # loaded again once, by the call that got 404


def test_a_slow_load_is_not_ready_and_goes_on_loading(setup: Setup) -> None:
    registry = setup.registry(RegistryConfig(load_wait_s=0.2))
    setup.container.load_delay_s = 1.0

    with pytest.raises(ModelNotReadyError, match=r"still downloading or loading after 0\.2 s"):
        setup.invoke(registry, "a.tar.gz")

    deadline = time.monotonic() + TIMEOUT_S
    while _metric(setup, "LoadedModelCount") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    answer, lease = setup.invoke(registry, "a.tar.gz")
    assert answer.status == 200 and lease.cache_hit
    assert len(setup.container.loads) == 1


def test_with_the_cache_disabled_a_model_is_unloaded_and_deleted_after_its_call(
    setup: Setup,
) -> None:
    registry = setup.registry(RegistryConfig(cache_enabled=False))
    a = registry.model_id("a.tar.gz")

    for _ in range(2):
        assert setup.invoke(registry, "a.tar.gz")[0].status == 200
        deadline = time.monotonic() + TIMEOUT_S
        while (setup.container.loaded or setup.disk.holds(a)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not setup.container.loaded and not setup.disk.holds(a)

    assert setup.store.fetches == ["a.tar.gz", "a.tar.gz"]
    assert setup.container.unloads == [a, a]


def test_unloaded_models_leave_the_disk_cache_first(setup: Setup, tmp_path: Path) -> None:
    setup.disk = DiskCache(tmp_path / "small-cache", 0, ExtractionLimits(max_bytes=1024))
    registry = setup.registry(RegistryConfig(max_loaded_models=1))
    a, b, c = (registry.model_id(name) for name in MODELS)

    for name in MODELS:
        setup.invoke(registry, name)

    # No budget: a, unloaded for b, went when c arrived; b stayed, loaded then, and c.
    assert [setup.disk.holds(key) for key in (a, b, c)] == [False, True, True]


def test_a_closed_registry_starts_no_job(setup: Setup) -> None:
    registry = setup.registry()
    registry.close()

    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        setup.invoke(registry, "a.tar.gz")
    assert setup.container.loads == []
