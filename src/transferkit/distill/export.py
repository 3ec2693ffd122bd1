"""Export a trained model to TorchScript or ONNX, each followed by an equivalence check.

The check runs the exported file (reloaded from disk; ONNX through
onnxruntime) and the eager model on real inputs and reports the largest
absolute logit difference. A file whose difference exceeds the tolerance is
not left under its requested name: it is renamed ``<name>.FAILED_CHECK<ext>``
and a :class:`~transferkit.errors.TransferkitError` is raised (exit status 2
on the command line). The check result is saved beside the file as
``<name>.check.json`` either way.

A LoRA model is merged first (each adapter folded into its layer, as peft's
``merge_and_unload``), and the merged model's outputs are checked against the
adapter model's before anything is written.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import TransferkitError
from ..io import atomic_write, write_json

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


@dataclass
class ExportCheck:
    """Outcome of one export: where, how many real inputs were compared and the largest difference."""

    format: str
    path: str
    n_inputs: int
    max_abs_diff: float
    tolerance: float
    passed: bool
    merged_lora_diff: float | None = None

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        merged = "" if self.merged_lora_diff is None else f"; LoRA merged (max |diff| {self.merged_lora_diff:.3g})"
        return (f"{self.format}: {self.path}  max |logit diff| {self.max_abs_diff:.3g} on {self.n_inputs} "
                f"real inputs (tolerance {self.tolerance:g}) {verdict}{merged}")


@torch.no_grad()
def _eager(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        atomic_write(path, lambda p: torch.jit.save(traced, str(p)))


def _run_torchscript(path: Path, x: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(x)


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise TransferkitError("ONNX export needs onnx and onnxruntime: pip install 'transferkit[onnx]'") from None


def _onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    _need_onnx()

    def write(p: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(p), dynamo=False, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
            )

    atomic_write(path, write)


def _run_onnx(path: Path, x: Tensor) -> Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def merge_for_export(model: nn.Module, x: Tensor, tolerance: float) -> tuple[nn.Module, float]:
    """A merged copy of a LoRA model and the largest logit difference to the adapter model on ``x``."""
    import copy

    from ..finetune.lora import merge_lora

    want = _eager(model, x)
    merged = merge_lora(copy.deepcopy(model)).eval()
    diff = float((_eager(merged, x) - want).abs().max())
    if diff > tolerance:
        raise TransferkitError(
            f"merging the LoRA adapter changed the outputs (max |logit diff| {diff:.3g} > tolerance {tolerance:g}); "
            "nothing was written"
        )
    return merged, diff


def export_model(
    model: nn.Module,
    inputs: Tensor,
    path: str | Path,
    fmt: str = "torchscript",
    tolerance: float = 1e-3,
    n_check: int = 256,
) -> ExportCheck:
    """Write ``model`` as ``fmt`` to ``path``, reload it and compare logits on ``inputs[:n_check]``.

    Raises:
        TransferkitError: unknown format, missing ONNX packages, or a failed equivalence check
            (the file is then renamed ``*.FAILED_CHECK*``).
    """
    if fmt not in FORMATS:
        raise TransferkitError(f"unknown export format '{fmt}'; known formats: {', '.join(FORMATS)}")
    if len(inputs) == 0:
        raise TransferkitError("export needs real inputs for its equivalence check, got an empty set")
    path = Path(path)
    model = model.to("cpu").eval()
    x = inputs[:n_check].detach().to("cpu", torch.float32)
    merged_diff = None
    if getattr(model, "spec", {}).get("lora"):
        model, merged_diff = merge_for_export(model, x, tolerance)
    example = x[: min(2, len(x))]
    (_torchscript if fmt == "torchscript" else _onnx)(model, example, path)
    got = (_run_torchscript if fmt == "torchscript" else _run_onnx)(path, x)
    want = _eager(model, x)
    diff = float((got.float() - want.float()).abs().max()) if got.shape == want.shape else float("inf")
    passed = diff <= tolerance
    if not passed:
        failed = path.with_name(f"{path.stem}.FAILED_CHECK{path.suffix}")
        path.replace(failed)
        path = failed
    check = ExportCheck(fmt, str(path), len(x), diff, tolerance, passed, merged_diff)
    write_json(path.with_name(f"{path.name}.check.json"), asdict(check))
    if not passed:
        raise TransferkitError(
            f"{fmt} export does not reproduce the model: max |logit diff| {diff:.3g} > tolerance {tolerance:g} "
            f"on {len(x)} real inputs; the file is kept as {path} for inspection (data-dependent control flow "
            "cannot be traced; raise --export-tolerance only if the difference is acceptable)"
        )
    return check
