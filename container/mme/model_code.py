"""Puts one model's own ``code/`` first on the import path of the worker that serves it."""

from __future__ import annotations

import glob
import os
import sys

from mme.errors import ModelLoadError

CODE_DIR_NAME = "code"
DEFAULT_MODEL_FILE = "model.pt"
EXPORTED_PROGRAM_SUFFIX = ".pt2"  # a torch.export program (torch.export.save)
EXPORTED_MODEL_FILE = "model" + EXPORTED_PROGRAM_SUFFIX
MODEL_FILE_SUFFIXES = (".pt", ".pth", EXPORTED_PROGRAM_SUFFIX)


def code_dir_of(model_dir: str) -> str:
    """The folder that holds a model's ``inference.py`` and helper modules."""
    return os.path.join(model_dir, CODE_DIR_NAME)


def _top_level_names(code_dir: str) -> set[str]:
    names = set()
    for entry in os.listdir(code_dir):
        stem, ext = os.path.splitext(entry)
        if ext == ".py" or os.path.isdir(os.path.join(code_dir, entry)):
            names.add(stem if ext == ".py" else entry)
    return names


def _loaded_from(module_name: str, code_dir: str) -> bool:
    module = sys.modules[module_name]
    origin = getattr(module, "__file__", None) or ""
    return os.path.abspath(origin).startswith(os.path.abspath(code_dir) + os.sep)


def activate_code_dir(model_dir: str) -> str | None:
    """Make ``<model_dir>/code`` win every import of the names it defines.

    The folder goes first on ``sys.path`` (an installed package or another model's
    module of the same name must not shadow the user's), and any module already
    imported under one of its names from elsewhere is forgotten, so that the next
    import finds the model's own. Returns the code folder, or None if there is none.
    """
    code_dir = code_dir_of(model_dir)
    if not os.path.isdir(code_dir):
        return None
    while code_dir in sys.path:
        sys.path.remove(code_dir)
    sys.path.insert(0, code_dir)
    for name in _top_level_names(code_dir):
        if name in sys.modules and not _loaded_from(name, code_dir):
            del sys.modules[name]
    forget_finder(code_dir)
    return code_dir


def forget_finder(folder: str) -> None:
    """Make the next import list ``folder`` afresh (it is new on ``sys.path``, or changed).

    Only its finder goes: ``importlib.invalidate_caches()`` would touch the finder of every
    folder the process ever imported from, which in a worker forked from the prefork zygote
    copies a page per finder (2.5 MiB per worker).
    """
    sys.path_importer_cache.pop(folder, None)


def user_module_path(model_dir: str, module_name: str) -> str | None:
    """The file of the user's module in the model's ``code/``, if it ships one."""
    code_dir = code_dir_of(model_dir)
    for candidate in (
        os.path.join(code_dir, f"{module_name}.py"),
        os.path.join(code_dir, module_name, "__init__.py"),
    ):
        if os.path.isfile(candidate):
            return candidate
    return None


def find_model_file(model_dir: str) -> str:
    """``model.pt``, else ``model.pt2``, else the folder's one ``.pt``/``.pth``/``.pt2`` file."""
    for name in (DEFAULT_MODEL_FILE, EXPORTED_MODEL_FILE):
        if os.path.isfile(os.path.join(model_dir, name)):
            return os.path.join(model_dir, name)
    found = sorted(
        path
        for suffix in MODEL_FILE_SUFFIXES
        for path in glob.glob(os.path.join(model_dir, f"*{suffix}"))
    )
    if len(found) != 1:
        listing = ", ".join(os.path.basename(f) for f in found) or "none"
        raise ModelLoadError(
            f"expected model.pt, model.pt2 or exactly one .pt/.pth/.pt2 file in the model folder "
            f"(found: {listing}); or ship code/inference.py with a model_fn"
        )
    return found[0]
