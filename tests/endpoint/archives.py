"""Model archives for the endpoint tests: tiny TorchScript models, and hostile archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def pack(folder: Path, archive: Path) -> Path:
    """``folder``'s files as a model.tar.gz (names relative to the folder)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return archive


def files_archive(archive: Path, files: dict[str, bytes]) -> Path:
    """A tar.gz that holds ``files`` ({name: content}), for tests that load no model."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            _add_bytes(tar, name, data)
    return archive


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str, hard: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def hostile_archive(
    archive: Path, kind: str, escape_name: str = "escaped.txt", depth: int = 2
) -> Path:
    """An archive that tries to write outside its folder (``depth`` levels up), or to make a
    device."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        _add_bytes(tar, "model.pt", b"not really a model")
        if kind == "dotdot":
            _add_bytes(tar, "../" * depth + escape_name, b"tar slip")
        elif kind == "absolute":
            _add_bytes(tar, f"/{archive.parent.as_posix().lstrip('/')}/{escape_name}", b"abs")
        elif kind == "symlink-out":
            _add_link(tar, "out", "/".join([".."] * (depth + 1)))
            _add_bytes(tar, f"out/{escape_name}", b"through a link")
        elif kind == "symlink-chain":
            _add_link(tar, "a", "p/..")  # fine while p does not exist ...
            _add_link(tar, "p", ".")  # ... but now a is the folder's parent
            _add_bytes(tar, f"a/{escape_name}", b"through a chain")
        elif kind == "hardlink-out":
            _add_link(tar, "h", "../../etc/passwd", hard=True)
        elif kind == "device":
            info = tarfile.TarInfo("dev")
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
        elif kind == "fifo":
            info = tarfile.TarInfo("pipe")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        else:
            raise ValueError(kind)
    return archive


def bomb_archive(archive: Path, expanded_bytes: int) -> Path:
    """A small archive holding one file of ``expanded_bytes`` zeros."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = expanded_bytes
        tar.addfile(info, _Zeros(expanded_bytes))
    return archive


class _Zeros(io.RawIOBase):
    """A stream of zeros, so a big bomb never sits in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = b"\0" * count
        self.left -= count
        return count


ECHO_CODE = """
import json
import os
import torch


def model_fn(model_dir):
    return torch.jit.load(os.path.join(model_dir, "model.pt"))


def transform_fn(model, data, content_type, accept, context):
    headers = {k.lower(): v for k, v in
               context.request_processor[0].get_request_properties().items()}
    y = model(torch.tensor(json.loads(data), dtype=torch.float32)).tolist()
    seen = {name: headers.get("x-amzn-sagemaker-" + name)
            for name in ("custom-attributes", "target-model", "inference-id")}
    return json.dumps({"y": y, "content_type": content_type, "accept": accept, **seen}), accept
"""

PREDICT_FAILS_CODE = """
def predict_fn(data, model):
    raise ValueError("this model always fails")
"""

LOAD_FAILS_CODE = """
def model_fn(model_dir):
    raise RuntimeError("this model cannot be loaded")
"""

# Out of memory on the first LOAD only: the endpoint must unload another model and retry.
OOM_ONCE_CODE = """
import os
import torch


def model_fn(model_dir):
    marker = os.path.join(model_dir, "failed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise MemoryError("pretend the host ran out of memory")
    return torch.jit.load(os.path.join(model_dir, "model.pt"))
"""

SLOW_LOAD_CODE = """
import os
import time
import torch


def model_fn(model_dir):
    time.sleep(8)
    return torch.jit.load(os.path.join(model_dir, "model.pt"))
"""
