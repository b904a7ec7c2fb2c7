"""A full disk during download and extraction, on a real small filesystem.

`mme endpoint` (and the `mme serve` it starts) run in a mount namespace of their own,
where the cache folder is a tmpfs of a few MiB; the test reads that folder through
/proc/<pid>/root, the endpoint's view of the filesystem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from harness.endpoint import Endpoint, base_env
from harness.models import SCALED_INPUT, scaled_model, scaled_output
from tests.endpoint.archives import pack

pytestmark = pytest.mark.server

DISK_MIB = 5
MIB = 1024 * 1024
# Random bytes do not compress: each archive takes as much room as its extracted model.
SIZES_MIB = {"a.tar.gz": 1.5, "b.tar.gz": 1.5, "c.tar.gz": 1.5, "huge.tar.gz": 6.0}
SCALES = {"a.tar.gz": 2.0, "b.tar.gz": 3.0, "c.tar.gz": 5.0, "huge.tar.gz": 7.0}


def _padded_archive(sources: Path, out: Path, name: str) -> None:
    folder = scaled_model(sources / name, SCALES[name])
    (folder / "padding.bin").write_bytes(os.urandom(int(SIZES_MIB[name] * MIB)))
    pack(folder, out / name)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    """`mme endpoint` whose cache folder is a tmpfs of DISK_MIB MiB."""
    models = tmp_path / "models"
    for name in SIZES_MIB:
        _padded_archive(tmp_path / "sources", models, name)
    cache = tmp_path / "cache"
    cache.mkdir()
    # unshare execs sh, which mounts the tmpfs and execs the endpoint: one process to stop.
    wrapper = (
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        f'mount -t tmpfs -o size={DISK_MIB}m tmpfs "$0" && exec "$@"',
        str(cache),
    )
    server = Endpoint(
        "disk-full",
        ["--model-data-url", str(models), "--cache-dir", str(cache), "--max-loaded-models", "1"],
        tmp_path / "endpoint.log",
        wrapper,
    )
    server.start(base_env())
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def _invoke(endpoint: Endpoint, target: str) -> object:
    answer = endpoint.client(retries={"max_attempts": 1}).invoke_endpoint(
        EndpointName=endpoint.name,
        TargetModel=target,
        ContentType="application/json",
        Body=json.dumps(SCALED_INPUT).encode(),
    )
    return json.loads(answer["Body"].read())


def _cache_view(endpoint: Endpoint) -> Path:
    """The cache folder as the endpoint sees it (inside its mount namespace)."""
    assert endpoint.process is not None
    cache = endpoint.args[endpoint.args.index("--cache-dir") + 1]
    return Path(f"/proc/{endpoint.process.pid}/root{cache}")


def _model_folders(endpoint: Endpoint) -> set[str]:
    return {p.name for p in _cache_view(endpoint).iterdir() if p.name != ".downloads"}


def test_a_full_disk_removes_unused_models_then_refuses_what_cannot_fit(endpoint: Endpoint) -> None:
    for target in ("a.tar.gz", "b.tar.gz"):
        assert _invoke(endpoint, target) == scaled_output(SCALES[target])
    assert len(_model_folders(endpoint)) == 2  # a (unloaded, on disk) and b (loaded)

    # c's archive and its extracted copy do not fit beside a and b: a is removed, c fits.
    assert _invoke(endpoint, "c.tar.gz") == scaled_output(SCALES["c.tar.gz"])
    assert "disk full while fetching c.tar.gz: removed 1 unused model(s)" in endpoint.log()
    assert len(_model_folders(endpoint)) == 2

    # Bigger than the whole disk: a clear 507, and nothing of it is left behind.
    with pytest.raises(ClientError) as refused:
        _invoke(endpoint, "huge.tar.gz")
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert error["Error"]["Code"] == "InsufficientStorage"
    assert "No space left" in error["Error"]["Message"]
    assert "Traceback" not in error["Error"]["Message"]
    assert len(_model_folders(endpoint)) == 1  # c, loaded; b had to go too
    assert list((_cache_view(endpoint) / ".downloads").iterdir()) == []

    # The endpoint and its models are unaffected.
    assert _invoke(endpoint, "c.tar.gz") == scaled_output(SCALES["c.tar.gz"])
    assert _invoke(endpoint, "a.tar.gz") == scaled_output(SCALES["a.tar.gz"])
