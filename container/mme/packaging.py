"""`mme package`: check model folders and pack them in the layout SageMaker extracts.

The check imports ``code/inference.py`` in a fresh interpreter of this environment, with
the model's ``code/requirements.txt`` installed into a temporary folder first, as the
container's LOAD installs it (offline from ``code/lib/`` when the model ships one). So it
finds code that cannot import, but not what only the image's environment would break.
The model file is then replaced in the archive by a faster copy when one is proven to
answer as it does (``mme.artifact_optimizer``), unless ``--no-optimize``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mme.errors import ModelLoadError
from mme.model_code import (
    DEFAULT_MODEL_FILE,
    code_dir_of,
    find_model_file,
    user_module_path,
)
from mme.model_requirements import RequirementsError, install_requirements

if TYPE_CHECKING:
    from mme.artifact_optimizer import Sample

HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
EXAMPLES = {"resnet_18": "resnet18", "resnet_152": "resnet152"}
EXAMPLE_CODE = Path(__file__).resolve().parents[2] / "code" / "image_classifier"
EXAMPLE_INPUT_SHAPE = (1, 3, 224, 224)  # what the example's input_fn makes of an image
IMPORT_CHECK_TIMEOUT_S = 300
REQUIREMENTS_TIMEOUT_S = 600
SKIPPED_NAMES = {"__pycache__", ".DS_Store"}
ARCHIVE_MODE = 0o666  # less the umask, as for any file the user creates

# argv: the code folder, the requirements folder ("" if none), the module, the functions.
# The order on sys.path is the worker's: the model's code, its requirements, the rest.
_IMPORT_CHECK = """
import importlib, json, sys
sys.path[:0] = [folder for folder in sys.argv[1:3] if folder]
module = importlib.import_module(sys.argv[3])
print(json.dumps([n for n in sys.argv[4:] if callable(getattr(module, n, None))]))
"""


class PackagingError(ValueError):
    """A model folder cannot be packed; the message lists every problem found."""


def _link_problem(root: Path, path: Path) -> str | None:
    target = os.readlink(path)
    if os.path.isabs(target):
        return f"{path.relative_to(root)}: a link to an absolute path ({target})"
    resolved = (path.parent / target).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"{path.relative_to(root)}: a link that leaves the model folder ({target})"
    return None


def _file_problems(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            problem = _link_problem(root, path)
            if problem:
                problems.append(problem)
        elif not (path.is_file() or path.is_dir()) or stat.S_ISSOCK(path.lstat().st_mode):
            problems.append(f"{path.relative_to(root)}: not a regular file or folder")
    return problems


def _installed_requirements(model_dir: Path, root: str) -> str:
    """The folder with the model's ``code/requirements.txt`` installed; "" if it has none."""
    try:
        return install_requirements(str(model_dir), root, REQUIREMENTS_TIMEOUT_S) or ""
    except RequirementsError as exc:
        raise PackagingError(exc.message) from exc


def _handler_functions(model_dir: Path, module: str) -> list[str]:
    """Import the user module in a fresh interpreter; return the handler functions it defines."""
    with tempfile.TemporaryDirectory(prefix="mme-requirements-") as root:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _IMPORT_CHECK,
                code_dir_of(str(model_dir)),
                _installed_requirements(model_dir, root),
                module,
                *HANDLER_FUNCTIONS,
            ],
            capture_output=True,
            text=True,
            timeout=IMPORT_CHECK_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackagingError(f"code/{module}.py does not import: {last}")
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def _code_problems(model_dir: Path, module: str) -> list[str]:
    functions: list[str] = []
    if user_module_path(str(model_dir), module) is not None:
        try:
            functions = _handler_functions(model_dir, module)
        except PackagingError as exc:
            return [str(exc)]
    problems = []
    if "transform_fn" in functions and {"input_fn", "predict_fn", "output_fn"} & set(functions):
        problems.append(
            f"code/{module}.py defines transform_fn together with "
            "input_fn/predict_fn/output_fn: use one style or the other"
        )
    if "model_fn" not in functions:
        try:
            find_model_file(str(model_dir))
        except ModelLoadError as exc:
            problems.append(
                f"no model_fn in code/{module}.py, and the default loader says: {exc.message}"
            )
    return problems


def check_model_dir(model_dir: Path, module: str = "inference") -> None:
    """Raise PackagingError listing every reason why ``model_dir`` would not serve."""
    if not model_dir.is_dir():
        raise PackagingError(f"{model_dir} is not a folder")
    problems = _file_problems(model_dir) or _code_problems(model_dir, module)
    if problems:
        raise PackagingError(f"{model_dir}:\n  - " + "\n  - ".join(problems))


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = os.path.basename(info.name)
    return None if name in SKIPPED_NAMES or name.endswith(".pyc") else info


def pack(model_dir: Path, archive: Path, replacements: Mapping[str, Path] | None = None) -> Path:
    """Write ``archive`` (tar.gz with the folder's contents at its root); never a partial file.

    ``replacements`` maps top-level names to the files to pack under those names instead
    (an optimised model file); the model folder itself is never changed.
    """
    replacements = replacements or {}
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{uuid.uuid4().hex}.partial")
    # Not mkstemp, whose 0600 would make the archive unreadable to anyone else (a container
    # that runs as another user, a web server): the usual mode, less the umask.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ARCHIVE_MODE))
    try:
        with tarfile.open(partial, "w:gz") as tar:
            for entry in sorted(model_dir.iterdir()):
                tar.add(replacements.get(entry.name, entry), arcname=entry.name, filter=_skip)
        os.replace(partial, archive)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return archive


def build_example(name: str, code_dir: Path, staging: Path, pretrained: bool) -> Path:
    """Lay out the ResNet example ``name`` (TorchScript weights + code/) under ``staging``."""
    import torch
    import torchvision

    from mme.pytorch_defaults import torchscript_deprecation_silenced

    if not (code_dir / "inference.py").is_file():
        raise PackagingError(f"{code_dir} has no inference.py (see --example-code)")
    builder = getattr(torchvision.models, EXAMPLES[name])
    # No weights can be downloaded on machines without internet: random ones by default.
    network = builder(weights="DEFAULT" if pretrained else None).eval()
    model_dir = staging / name
    shutil.copytree(code_dir, model_dir / "code", ignore=shutil.ignore_patterns(*SKIPPED_NAMES))
    with torchscript_deprecation_silenced():  # TorchScript is what the toolkit loads
        torch.jit.save(torch.jit.script(network), str(model_dir / DEFAULT_MODEL_FILE))
    return model_dir


def example_sample_input() -> Sample:
    """An input of the examples' shape, to check their optimised copies against (seeded)."""
    import torch

    return (torch.randn(EXAMPLE_INPUT_SHAPE, generator=torch.Generator().manual_seed(0)),)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `mme package`."""
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a model folder (weights + code/), or an example name: " + ", ".join(EXAMPLES),
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        default="models",
        type=Path,
        help="where to write <name>.tar.gz (default: ./models)",
    )
    parser.add_argument(
        "--example-code",
        default=EXAMPLE_CODE,
        type=Path,
        help="the code/ of the examples (default: code/image_classifier of "
        "this source tree, wherever you run the command)",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="download torchvision's pretrained weights (needs internet); random weights otherwise",
    )
    parser.add_argument(
        "--program",
        default="inference",
        help="the module in code/ that defines the handler functions",
    )
    parser.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="pack the model file as it is; by default a TorchScript model.pt "
        "is replaced by a frozen copy when that copy answers code/"
        "sample_input.npy (the input of the model's forward, batch included) "
        "as the original does, within the tolerance docs/packaging.md states",
    )


def package(
    model_dir: Path,
    output_dir: Path,
    module: str = "inference",
    optimize: bool = True,
    sample: Sample | None = None,
) -> tuple[Path, str]:
    """Check ``model_dir``, optimise its model file unless not, and pack it into
    ``output_dir``; the archive, and what the optimiser did (empty without it)."""
    check_model_dir(model_dir, module)
    archive = output_dir / f"{model_dir.resolve().name}.tar.gz"
    if not optimize:
        return pack(model_dir, archive), ""
    # Imported here: it imports torch, which `mme package --help` need not wait for.
    from mme.artifact_optimizer import optimize_model_dir

    work_dir = Path(tempfile.mkdtemp(prefix="mme-optimized-"))
    try:
        optimization = optimize_model_dir(model_dir, work_dir, sample)
        return pack(model_dir, archive, optimization.replacements), optimization.note
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _pack_source(source: str, args: argparse.Namespace, staging: Path) -> Path:
    sample = None
    if source in EXAMPLES:
        model_dir = build_example(source, args.example_code, staging, args.pretrained)
        sample = example_sample_input()
    else:
        model_dir = Path(source)
    archive, note = package(model_dir, args.output_dir, args.program, args.optimize, sample)
    if note:
        print(f"{source}: {note}")
    return archive


def package_command(args: argparse.Namespace) -> int:
    """Check, optimise and pack every source; report each archive, or every problem found."""
    failures = 0
    with tempfile.TemporaryDirectory(prefix="mme-package-") as staging:
        for source in args.sources:
            try:
                archive = _pack_source(source, args, Path(staging))
            except PackagingError as exc:
                print(f"mme package: {exc}", file=sys.stderr)
                failures += 1
                continue
            print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    return 1 if failures else 0
