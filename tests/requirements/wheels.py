"""Tiny wheels built by hand, so that tests install real packages without a network."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

PACKAGE = "mme_tinydep"  # a name no real environment has


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(
    out_dir: Path, version: str, name: str = PACKAGE, requires: tuple[str, ...] = ()
) -> Path:
    """``<name>-<version>-py3-none-any.whl`` whose module says ``VERSION = '<version>'``.

    ``requires`` become its ``Requires-Dist`` lines (its dependencies).
    """
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            "Summary: a test package\n"
            + "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: mme-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [_record_line(path, data) for path, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            # A fixed date: the same version built twice is the same file, byte for byte.
            archive.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return wheel


def ship_requirements(model_dir: Path, requirements: str, versions: tuple[str, ...] = ()) -> None:
    """Write ``code/requirements.txt`` and put a wheel of each version in ``code/lib/``."""
    code_dir = model_dir / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "requirements.txt").write_text(requirements)
    for version in versions:
        build_wheel(code_dir / "lib", version)
