"""The fastest artifact of a model's TorchScript file that provably answers as the original does.

`mme package` asks :func:`optimize_model_dir` what to pack for a model folder's model file.
Each candidate is built from the original, saved, *loaded back as the server loads it*, and
run on a sample input; it wins only if every run's outputs are within the tolerance of the
original's (see :func:`largest_difference`). Otherwise the original is packed as it is.

CANDIDATES are in the order of their speed as measured on a 2-vCPU x86 machine (docs/packaging.md
has the numbers), so the first that passes is the fastest that is proven. Measured there and
left out: ``torch.jit.optimize_for_inference`` is faster still in memory, but torch cannot
save its modules (the saved file does not load), so it is no artifact; a ``torch.export``
program ran no faster than eager, and an AOTInductor package slower.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mme.errors import ModelLoadError
from mme.model_code import EXPORTED_PROGRAM_SUFFIX, code_dir_of, find_model_file
from mme.pytorch_defaults import load_model, torchscript_deprecation_silenced

SAMPLE_INPUT_FILE = "sample_input.npy"  # in code/: the model's forward input, batch included
# TorchScript's profiling executor runs a graph as it is on the first call and the graph it
# optimised from the second or third call on: those later runs are the ones that serve.
RUNS = 3
# An output element may differ from the original's by RTOL * |original| + RTOL / 10 * (the
# largest |original| of that output): folding batch norm into convolutions reorders float
# arithmetic, nothing more. Integer and boolean outputs must be equal.
RTOL = 1e-4
HALF_RTOL = 1e-2  # for float16 and bfloat16 outputs, whose own precision is about 1e-3

Sample = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Candidate:
    """One way to rewrite a TorchScript module for faster inference."""

    name: str
    channels_last: bool  # 4-D and 5-D weights stored channels-last, which convolutions prefer

    def build(self, model_file: Path, target: Path) -> None:
        """Write the candidate for ``model_file`` to ``target``."""
        module = load_model(str(model_file))
        with torchscript_deprecation_silenced():
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last)
            # User code may call the module's other public methods: freezing keeps them
            # (torch has no public list of a ScriptModule's methods).
            methods = [
                name
                for name in module._c._method_names()
                if name != "forward" and not name.startswith("_")
            ]
            torch.jit.save(torch.jit.freeze(module, preserved_attrs=methods), str(target))

    def applies_to(self, module: Any) -> bool:
        """Whether the candidate can differ from plain freezing for ``module``."""
        if not self.channels_last:
            return True
        tensors = itertools.chain(module.parameters(), module.buffers())
        return any(tensor.dim() in (4, 5) for tensor in tensors)


CANDIDATES = (
    Candidate("frozen TorchScript with channels-last weights", channels_last=True),
    Candidate("frozen TorchScript", channels_last=False),
)


@dataclass(frozen=True)
class Optimization:
    """What to pack for a model folder: its model file replaced by ``artifact``, or as it is."""

    note: str  # one line for the user: what was done, or why nothing was
    model_file: Path | None = None
    artifact: Path | None = None

    @property
    def replacements(self) -> dict[str, Path]:
        """The archive's top-level names to take from another file."""
        if self.model_file is None or self.artifact is None:
            return {}
        return {self.model_file.name: self.artifact}


class Mismatch(Exception):
    """The outputs of a candidate are not those of the original."""


def _last_line(exc: BaseException) -> str:
    # TorchScript errors end with the Python-like error line after their own traceback.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def read_sample_input(model_dir: Path) -> Sample | None:
    """The array in ``code/sample_input.npy`` as the model's one input; None without the file."""
    path = Path(code_dir_of(str(model_dir))) / SAMPLE_INPUT_FILE
    if not path.is_file():
        return None
    return (torch.from_numpy(np.load(path, allow_pickle=False)),)


def _paired_tensors(reference: Any, output: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(reference, torch.Tensor):
        if not isinstance(output, torch.Tensor):
            raise Mismatch(f"{where} is a {type(output).__name__}, not a tensor")
        yield where, reference, output
    elif isinstance(reference, (list, tuple)):
        if not isinstance(output, (list, tuple)) or len(output) != len(reference):
            raise Mismatch(f"{where} is not a sequence of {len(reference)}")
        for index, (ref, out) in enumerate(zip(reference, output, strict=True)):
            yield from _paired_tensors(ref, out, f"{where}[{index}]")
    elif isinstance(reference, dict):
        if not isinstance(output, dict) or output.keys() != reference.keys():
            raise Mismatch(f"{where} does not have the keys {sorted(reference)}")
        for key in reference:
            yield from _paired_tensors(reference[key], output[key], f"{where}[{key!r}]")
    elif output != reference:
        raise Mismatch(f"{where} is {output!r}, not {reference!r}")


def largest_difference(reference: Any, output: Any) -> float:
    """How far two outputs differ, relative to the largest magnitude of the reference's tensor.

    Raises Mismatch when an element is beyond the tolerance, or the two differ in structure,
    shape or dtype.
    """
    largest = 0.0
    for where, ref, out in _paired_tensors(reference, output, "output"):
        if out.shape != ref.shape or out.dtype != ref.dtype:
            raise Mismatch(
                f"{where} is {tuple(out.shape)} {out.dtype}, not {tuple(ref.shape)} {ref.dtype}"
            )
        if not ref.is_floating_point():
            if not torch.equal(out, ref):
                raise Mismatch(f"{where} differs")
            continue
        if ref.numel() == 0:
            continue
        rtol = RTOL if torch.finfo(ref.dtype).bits > 16 else HALF_RTOL
        scale = float(ref.abs().nan_to_num(posinf=0, neginf=0).max()) or 1.0
        relative = float((out.double() - ref.double()).abs().nan_to_num(0).max()) / scale
        if not torch.allclose(out, ref, rtol=rtol, atol=rtol / 10 * scale, equal_nan=True):
            raise Mismatch(
                f"{where} differs by up to {relative:.2g} of its largest magnitude, "
                f"beyond the tolerance (rtol {rtol:g})"
            )
        largest = max(largest, relative)
    return largest


def _outputs(module: Any, sample: Sample) -> list[Any]:
    with torch.inference_mode():
        return [module(*sample) for _ in range(RUNS)]


def _largest_difference_of_runs(reference: Any, runs: list[Any]) -> float:
    return max(largest_difference(reference, output) for output in runs)


def _as_it_is(model_file: Path, why: str) -> Optimization:
    return Optimization(f"{model_file.name} packed as it is: {why}")


def _reference(model_file: Path, sample: Sample) -> tuple[Any, Any]:
    """The original module and its outputs for ``sample``; ValueError says why there are none."""
    try:
        original = load_model(str(model_file))
    except ModelLoadError as exc:
        raise ValueError(exc.message) from exc
    try:
        runs = _outputs(original, sample)
    except Exception as exc:  # the user's model may raise anything on a bad sample
        raise ValueError(f"the sample input does not run through it ({_last_line(exc)})") from exc
    try:
        _largest_difference_of_runs(runs[-1], runs)
    except Mismatch as exc:
        raise ValueError(
            "its outputs change from run to run, so no copy can be checked against them"
        ) from exc
    return original, runs[-1]


def optimize(model_file: Path, sample: Sample, work_dir: Path) -> Optimization:
    """The first candidate for ``model_file`` that answers ``sample`` as the original does."""
    if model_file.suffix == EXPORTED_PROGRAM_SUFFIX:
        return _as_it_is(model_file, "a torch.export program is served as exported")
    try:
        original, reference = _reference(model_file, sample)
    except ValueError as exc:
        return _as_it_is(model_file, str(exc))
    rejected = []
    for candidate in CANDIDATES:
        if not candidate.applies_to(original):
            continue
        artifact = work_dir / f"{candidate.name.replace(' ', '-')}-{model_file.name}"
        try:
            candidate.build(model_file, artifact)
            difference = _largest_difference_of_runs(
                reference, _outputs(load_model(str(artifact)), sample)
            )
        except Exception as exc:  # Mismatch, or a module that does not freeze, save or run
            rejected.append(f"{candidate.name}: {_last_line(exc)}")
            artifact.unlink(missing_ok=True)
            continue
        return Optimization(
            f"{model_file.name} optimised: {candidate.name}, verified on the sample input "
            f"(outputs within {difference:.1g} of their largest magnitude)",
            model_file,
            artifact,
        )
    return _as_it_is(
        model_file, "no optimised copy answers as it does (" + "; ".join(rejected) + ")"
    )


def optimize_model_dir(
    model_dir: Path, work_dir: Path, sample: Sample | None = None
) -> Optimization:
    """What to pack for ``model_dir``'s model file; ``sample`` stands for code/sample_input.npy."""
    try:
        model_file = Path(find_model_file(str(model_dir)))
    except ModelLoadError:
        return Optimization(
            "no single model file to optimise (model.pt, model.pt2, or the one .pt/.pth/.pt2)"
        )
    if sample is None:
        try:
            sample = read_sample_input(model_dir)
        except (OSError, ValueError) as exc:
            return _as_it_is(
                model_file, f"code/{SAMPLE_INPUT_FILE} cannot be read ({_last_line(exc)})"
            )
    if sample is None:
        return _as_it_is(
            model_file, f"no code/{SAMPLE_INPUT_FILE} to check an optimised copy against"
        )
    return optimize(model_file, sample, work_dir)
