"""The real boto3 client against `mme endpoint --container-url`, models in a local folder.

All endpoints here front one real `mme serve` container; each has its own models
folder and cache, so the container's GET /models shows what each one loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.endpoint import ContainerProcess, Endpoint, base_env, fronting
from harness.models import SCALED_INPUT, jpeg_bytes, scaled_output
from harness.polling import settle, wait_until
from tests.endpoint.conftest import SCALES

pytestmark = pytest.mark.server

PAYLOAD = json.dumps(SCALED_INPUT).encode()
NAME = "local-endpoint"
TCP_INFO_BYTES = 256
TCPI_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in Linux's struct tcp_info (4.6+)

MakeEndpoint = Callable[..., Endpoint]


@pytest.fixture
def make_endpoint(
    tmp_path: Path, archives: dict[str, Path], container: ContainerProcess
) -> Iterator[MakeEndpoint]:
    """Start `mme endpoint` over a folder holding ``models``, fronting the shared container."""
    started: list[Endpoint] = []

    def make(models: list[str], *options: str) -> Endpoint:
        folder = tmp_path / "models"
        folder.mkdir(exist_ok=True)
        for name in models:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(archives[name], folder / name)
        cache = tmp_path / "cache"
        endpoint = Endpoint(
            NAME,
            [*fronting(container.url, folder, cache), *options],
            tmp_path / "endpoint.log",
        )
        started.append(endpoint)
        endpoint.cache = cache  # type: ignore[attr-defined]
        return endpoint.start(base_env())  # type: ignore[return-value]

    try:
        yield make
    finally:
        for endpoint in started:
            code = endpoint.stop()
            container.unload_under(tmp_path / "cache")
            assert code == 0, endpoint.log()[-3000:]


def _invoke(endpoint: Endpoint, target: str) -> Any:
    answer = endpoint.client().invoke_endpoint(
        EndpointName=endpoint.name,
        TargetModel=target,
        ContentType="application/json",
        Accept="application/json",
        Body=PAYLOAD,
    )
    return json.loads(answer["Body"].read())


def _model_id(endpoint: Endpoint, target: str) -> str:
    """The container's name for ``target``, from the endpoint's own log line."""
    found = re.findall(rf"loaded {re.escape(target)} as ([0-9a-f]+)", endpoint.log())
    assert found, f"no load of {target} in the log"
    return str(found[-1])


def _loaded(container: ContainerProcess, endpoint: Endpoint) -> set[str]:
    return set(container.models_under(endpoint.cache))  # type: ignore[attr-defined]


def test_local_folder_miss_then_hit(make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint(["b.tar.gz"])

    answers = [_invoke(endpoint, "b.tar.gz") for _ in range(2)]

    assert answers == [scaled_output(SCALES["b.tar.gz"])] * 2
    metrics = endpoint.metrics()
    assert (metrics["ModelCacheHit_sum"], metrics["ModelCacheHit_count"]) == (1, 2)
    assert metrics["ModelDownloadingTime_count"] == 1
    assert metrics["ModelLoadingTime_count"] == 1
    assert metrics["LoadedModelCount"] == 1


def test_a_model_the_container_lost_is_loaded_again(
    make_endpoint: MakeEndpoint, container: ContainerProcess
) -> None:
    endpoint = make_endpoint(["b.tar.gz"])
    _invoke(endpoint, "b.tar.gz")
    # The container forgets the model behind the endpoint's back (as after a restart).
    lost = requests.delete(f"{container.url}/models/{_model_id(endpoint, 'b.tar.gz')}", timeout=130)
    assert lost.status_code == 200

    assert _invoke(endpoint, "b.tar.gz") == scaled_output(SCALES["b.tar.gz"])

    metrics = endpoint.metrics()
    assert metrics["ModelLoadingTime_count"] == 2  # invoke got 404: loaded again, once
    assert metrics["ModelDownloadingTime_count"] == 1  # from the disk cache
    assert metrics["mme_endpoint_responses_total_200"] == 2


def test_max_loaded_models_evicts_the_least_recently_used(
    make_endpoint: MakeEndpoint, container: ContainerProcess
) -> None:
    endpoint = make_endpoint(["a.tar.gz", "b.tar.gz", "c.tar.gz"], "--max-loaded-models", "1")

    for target in ("a.tar.gz", "b.tar.gz", "c.tar.gz"):
        assert _invoke(endpoint, target) == scaled_output(SCALES[target])
        assert _loaded(container, endpoint) == {_model_id(endpoint, target)}

    metrics = endpoint.metrics()
    assert metrics["ModelUnloadingTime_count"] == 2
    assert metrics["LoadedModelCount"] == 1
    assert "unloaded a.tar.gz" in endpoint.log() and "unloaded b.tar.gz" in endpoint.log()
    # Back to the first: loaded again from the disk cache, without a download.
    assert _invoke(endpoint, "a.tar.gz") == scaled_output(SCALES["a.tar.gz"])
    metrics = endpoint.metrics()
    assert metrics["ModelDownloadingTime_count"] == 3
    assert metrics["ModelLoadingTime_count"] == 4
    assert metrics["ModelCacheHit_sum"] == 0
    assert _loaded(container, endpoint) == {_model_id(endpoint, "a.tar.gz")}


def test_the_disk_cache_is_bounded(make_endpoint: MakeEndpoint) -> None:
    # No disk budget: an unloaded model is deleted as soon as another archive arrives.
    endpoint = make_endpoint(
        ["a.tar.gz", "b.tar.gz", "c.tar.gz"], "--max-loaded-models", "1", "--cache-max-mb", "0"
    )
    cache: Path = endpoint.cache  # type: ignore[attr-defined]
    for target in ("a.tar.gz", "b.tar.gz", "c.tar.gz"):
        _invoke(endpoint, target)

    on_disk = {p.name for p in cache.iterdir() if not p.name.startswith(".")}
    assert _model_id(endpoint, "a.tar.gz") not in on_disk
    assert _model_id(endpoint, "c.tar.gz") in on_disk
    assert "removed a.tar.gz from the disk cache" in endpoint.log()
    assert _invoke(endpoint, "a.tar.gz") == scaled_output(SCALES["a.tar.gz"])
    assert endpoint.metrics()["ModelDownloadingTime_count"] == 4  # a came from the store again


def test_out_of_memory_unloads_the_least_recently_used_and_retries(
    make_endpoint: MakeEndpoint, container: ContainerProcess
) -> None:
    endpoint = make_endpoint(["a.tar.gz", "b.tar.gz", "oom-once.tar.gz"])
    _invoke(endpoint, "a.tar.gz")
    _invoke(endpoint, "b.tar.gz")

    # Its first LOAD answers 507 (model_fn raises MemoryError): a goes, then the retry works.
    assert _invoke(endpoint, "oom-once.tar.gz") == scaled_output(SCALES["oom-once.tar.gz"])

    assert _loaded(container, endpoint) == {
        _model_id(endpoint, "b.tar.gz"),
        _model_id(endpoint, "oom-once.tar.gz"),
    }
    assert "unloaded a.tar.gz" in endpoint.log()
    assert "unloaded b.tar.gz" not in endpoint.log()
    assert "unload_us=" in endpoint.call_lines("oom-once.tar.gz")[0]
    metrics = endpoint.metrics()
    assert metrics["ModelUnloadingTime_count"] == 1
    assert metrics["LoadedModelCount"] == 2


def test_model_cache_disabled_unloads_and_deletes_after_each_call(
    make_endpoint: MakeEndpoint, container: ContainerProcess
) -> None:
    endpoint = make_endpoint(["disabled.tar.gz"], "--model-cache-setting", "Disabled")
    cache: Path = endpoint.cache  # type: ignore[attr-defined]

    def gone() -> bool:
        return not _loaded(container, endpoint) and not any(
            p.is_dir() and not p.name.startswith(".") for p in cache.iterdir()
        )

    for _ in range(2):
        assert _invoke(endpoint, "disabled.tar.gz") == scaled_output(SCALES["disabled.tar.gz"])
        assert wait_until(gone, timeout_s=60)

    metrics = endpoint.metrics()
    assert metrics["ModelDownloadingTime_count"] == 2
    assert metrics["ModelUnloadingTime_count"] == 2
    assert metrics["ModelCacheHit_sum"] == 0


def test_a_slow_load_gives_model_not_ready_and_goes_on_loading(make_endpoint: MakeEndpoint) -> None:
    # slow.tar.gz sleeps 8 s in model_fn; calls wait 2 s for a load.
    endpoint = make_endpoint(["slow.tar.gz"], "--invocation-timeout", "2")
    client = endpoint.client()

    with pytest.raises(client.exceptions.ModelNotReadyException) as caught:
        _invoke(endpoint, "slow.tar.gz")

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429

    def answer_once_loaded() -> Any:
        try:
            return _invoke(endpoint, "slow.tar.gz")
        except client.exceptions.ModelNotReadyException:
            return None

    answer = settle(
        answer_once_loaded, lambda found: found is not None, timeout_s=180, interval_s=1
    )
    assert answer == scaled_output(SCALES["slow.tar.gz"])
    metrics = endpoint.metrics()
    assert metrics["ModelLoadingTime_count"] == 1  # the retries joined the same load
    assert metrics["ModelDownloadingTime_count"] == 1
    assert metrics["mme_endpoint_responses_total_429"] >= 1


# Each TargetModel below is refused with a 400 naming the problem; nothing reaches the cache.
NOT_A_PLAIN_KEY = "has an empty, '.' or '..' part"
BAD_TARGETS = {
    "../outside.tar.gz": NOT_A_PLAIN_KEY,  # a real archive, beside the prefix
    "sub/../../outside.tar.gz": NOT_A_PLAIN_KEY,
    "../models/a.tar.gz": NOT_A_PLAIN_KEY,  # the prefix's own a.tar.gz, by another name
    "./a.tar.gz": NOT_A_PLAIN_KEY,
    "/etc/passwd": "starts with '/'",
    "escape.tar.gz": "leads outside the ModelDataUrl prefix",  # a link to outside.tar.gz
    "corrupt.tar.gz": "not a valid tar.gz archive",
    "truncated.tar.gz": "not a valid tar.gz archive",
}


def test_bad_target_models_and_broken_archives_are_refused_cleanly(
    make_endpoint: MakeEndpoint, archives: dict[str, Path], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(archives["a.tar.gz"], tmp_path / "outside.tar.gz")
    (models / "escape.tar.gz").symlink_to(tmp_path / "outside.tar.gz")
    (models / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    whole = archives["b.tar.gz"].read_bytes()
    (models / "truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    endpoint = make_endpoint(["a.tar.gz"])
    client = endpoint.client()
    cache: Path = endpoint.cache  # type: ignore[attr-defined]
    # An archive that exists, named by its absolute path: why it is refused is said.
    targets = {**BAD_TARGETS, str(models / "a.tar.gz"): "starts with '/'"}

    for target, words in targets.items():
        with pytest.raises(client.exceptions.ValidationError) as caught:
            _invoke(endpoint, target)
        message = caught.value.response["Error"]["Message"]
        assert words in message, (target, message)
        assert "Traceback" not in message
        assert [p.name for p in cache.iterdir() if p.name != ".downloads"] == [], target
        assert list((cache / ".downloads").iterdir()) == [], target

    assert _invoke(endpoint, "a.tar.gz") == scaled_output(SCALES["a.tar.gz"])
    assert endpoint.metrics()["mme_endpoint_responses_total_400"] == len(targets)


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet_18.tar.gz as `mme package resnet_18` builds it (random weights: no internet)."""
    folder = tmp_path_factory.mktemp("resnet")
    built = subprocess.run(
        [sys.executable, "-m", "mme.cli", "package", "resnet_18", "-o", str(folder)],
        env=base_env(),
        capture_output=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout.decode() + built.stderr.decode()
    assert (folder / "resnet_18.tar.gz").is_file()
    return folder


def test_resnet_18_answers_the_top_5_through_boto3(
    resnet_folder: Path, tmp_path: Path, container: ContainerProcess
) -> None:
    cache = tmp_path / "cache"
    endpoint = Endpoint(
        NAME,
        fronting(container.url, resnet_folder, cache),
        tmp_path / "ep.log",
    )
    endpoint.start(base_env())
    try:
        client = endpoint.client()
        answers = [
            json.loads(
                client.invoke_endpoint(
                    EndpointName=NAME,
                    TargetModel="resnet_18.tar.gz",
                    ContentType="application/x-image",
                    Accept="application/json",
                    Body=jpeg_bytes(),
                )["Body"].read()
            )
            for _ in range(2)
        ]
        with pytest.raises(client.exceptions.ModelError) as not_an_image:
            client.invoke_endpoint(
                EndpointName=NAME,
                TargetModel="resnet_18.tar.gz",
                ContentType="image/jpeg",
                Body=b"not an image",
            )
    finally:
        code = endpoint.stop()
        container.unload_under(cache)
    assert code == 0
    top5 = answers[0]
    assert answers[1] == top5
    assert len(top5) == 5
    assert all(set(item) == {"class", "probability"} for item in top5)
    probabilities = [item["probability"] for item in top5]
    assert probabilities == sorted(probabilities, reverse=True)
    lines = endpoint.call_lines("resnet_18.tar.gz")
    assert ["cache_hit=0" in lines[0], "cache_hit=1" in lines[1]] == [True, True]
    refused = not_an_image.value.response
    assert refused["OriginalStatusCode"] == 400
    assert "the body is not a JPEG or PNG image" in refused["OriginalMessage"]
    assert " at 0x" not in refused["OriginalMessage"]  # no Python object in the message


def _data_segments_in(sock: socket.socket) -> int:
    """How many segments with data the socket has received (Linux's tcp_info)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    return int(struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0])


def _segments_of_answers(url: str, requests_: list[bytes]) -> list[tuple[int, int]]:
    """Send each request on one kept-alive connection: (status, data segments of its answer)."""
    host, port = url.removeprefix("http://").split(":")
    seen = []
    with (
        socket.create_connection((host, int(port)), timeout=120) as sock,
        sock.makefile("rb") as answers,
    ):
        for request in requests_:
            before = _data_segments_in(sock)
            sock.sendall(request)
            status = int(answers.readline().split()[1])
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                length = int(value) if name.lower() == "content-length" else length
            answers.read(length)
            seen.append((status, _data_segments_in(sock) - before))
    return seen


def test_answers_leave_in_one_segment_on_a_kept_alive_connection(
    make_endpoint: MakeEndpoint,
) -> None:
    # An answer written in two parts (headers, then body) waits for the client's delayed
    # ACK of the first, up to 40 ms per call with Nagle's algorithm: one segment cannot.
    endpoint = make_endpoint(["a.tar.gz", "predict-fails.tar.gz"])

    def invocation(target: str) -> bytes:
        return (
            f"POST /endpoints/{NAME}/invocations HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nX-Amzn-SageMaker-Target-Model: {target}\r\n"
            f"Content-Length: {len(PAYLOAD)}\r\n\r\n"
        ).encode() + PAYLOAD

    seen = _segments_of_answers(
        endpoint.url,
        [
            invocation("a.tar.gz"),
            invocation("a.tar.gz"),
            invocation("a.tar.gz"),
            invocation("predict-fails.tar.gz"),
            b"GET /no-such-route HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
        ],
    )

    assert seen == [(200, 1), (200, 1), (200, 1), (424, 1), (404, 1), (200, 1)]
    metrics = endpoint.metrics()
    assert metrics["mme_endpoint_responses_total_404"] == 1  # counted, though no invocation
    assert metrics["mme_endpoint_responses_total_200"] == 3  # /ping and /metrics are not


def test_a_model_whose_load_failed_is_fetched_again(
    make_endpoint: MakeEndpoint, archives: dict[str, Path], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(archives["load-fails.tar.gz"], models / "m.tar.gz")
    endpoint = make_endpoint([])
    client = endpoint.client()
    with pytest.raises(client.exceptions.ModelError):
        _invoke(endpoint, "m.tar.gz")
    cache: Path = endpoint.cache  # type: ignore[attr-defined]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []

    # The fixed model, uploaded under the same name, serves at once (as on SageMaker).
    shutil.copy(archives["a.tar.gz"], models / "m.tar.gz")
    assert _invoke(endpoint, "m.tar.gz") == scaled_output(SCALES["a.tar.gz"])

    failures = [line for line in endpoint.log().splitlines() if "LOAD of m.tar.gz" in line]
    assert len(failures) == 1, failures  # once, with the TargetModel and the container's id
    assert re.search(r"\(container model [0-9a-f]{32}\) failed with 500", failures[0])
    metrics = endpoint.metrics()
    assert metrics["ModelDownloadingTime_count"] == 2
    assert (metrics["Invocation5XXErrors_sum"], metrics["Invocation5XXErrors_count"]) == (1, 2)


def test_mme_invoke_needs_no_credentials_nor_region_against_the_local_endpoint(
    make_endpoint: MakeEndpoint, tmp_path: Path
) -> None:
    endpoint = make_endpoint(["a.tar.gz"])
    body = tmp_path / "body.json"
    body.write_bytes(PAYLOAD)
    nowhere = str(tmp_path / "no-aws-config")
    env = {
        **{k: v for k, v in base_env().items() if not k.startswith("AWS_")},
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # never ask 169.254.169.254 for credentials

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mme.cli",
            "invoke",
            NAME,
            "--endpoint-url",
            endpoint.url,
            "--target-model",
            "a.tar.gz",
            "--content-type",
            "application/json",
            "--body",
            str(body),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == scaled_output(SCALES["a.tar.gz"])


def test_the_endpoint_starts_without_warnings(make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint([])

    assert "Warning" not in endpoint.log()  # sagemaker-inference's pkg_resources warning
