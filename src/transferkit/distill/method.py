"""The distillation method: a student learns from a frozen teacher through named losses.

.. math::
    \\mathcal{L} = \\sum_k w_k\\, \\mathcal{L}_k(\\text{student}(x), \\text{teacher}(x), y)

with ``L_k`` from :mod:`transferkit.distill.losses` (``ce``, ``kd``, ``fitnet``,
``at``, ``rkd``, ``dkd``). The student is ``method.model`` and is what the
engine optimises and checkpoints, together with any learned regressor. The
teacher lives in a plain list attribute, so it is *not* a submodule: it is
never in ``method.parameters()``, never in a checkpoint, and ``method.train()``
does not switch it out of eval mode. Its outputs come either from the batch
(``batch["teacher"]``, index-sliced from a :class:`~transferkit.distill.cache.TeacherCache`)
or are computed online in eval mode under ``no_grad``.

FitNet's stage-wise schedule (Romero et al. 2015): for the first
``hint_epochs`` epochs only the hint losses train (the student up to its
guided layers plus the regressors), afterwards only the other losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import Method, StepInfo
from ..models import Classifier, FeatureHooks
from .losses import DistillLoss, Outputs


def hooks_for(model: nn.Module, paths: Sequence[str], role: str) -> FeatureHooks:
    """Feature hooks whose error names the role (``teacher`` hint / ``student`` guided layer)."""
    from ..errors import TransferkitError

    try:
        return FeatureHooks(model, list(paths))
    except TransferkitError as exc:
        raise TransferkitError(f"{role} layer: {exc}") from None


def forward_outputs(model: nn.Module, x: Tensor, hooks: FeatureHooks | None = None) -> Outputs:
    """Run ``model`` once; logits, embedding (a Classifier's features, else the logits) and hooked layers."""
    if hooks is None:
        return _forward(model, x)
    with hooks as feats:
        out = _forward(model, x)
        out.hints = [feats[p] for p in hooks.modules]
    return out


def _forward(model: nn.Module, x: Tensor) -> Outputs:
    if isinstance(model, Classifier):
        emb, logits = model.forward_all(x)
        return Outputs(logits, emb)
    logits = model(x)
    return Outputs(logits, logits)


class Distill(Method):
    """Batches are dicts: ``x``, ``y`` (``None`` on an unlabelled transfer set), optional ``teacher`` (:class:`Outputs`).

    Args:
        student: the network that trains (``method.model``).
        teacher: the frozen network; kept out of the parameters and checkpoints.
        losses: name -> loss module; their weights in ``weights``.
        hint_pairs: (teacher hint layer, student guided layer) module paths, for ``fitnet`` / ``at``.
        hint_stage: ``joint`` (hint losses added throughout) or ``stagewise``.
        hint_epochs: length of the first stage with ``stagewise``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        losses: dict[str, DistillLoss],
        weights: dict[str, float],
        hint_pairs: Sequence[tuple[str, str]] = (),
        hint_stage: str = "joint",
        hint_epochs: int = 1,
    ):
        super().__init__(student)  # type: ignore[arg-type]
        self._teacher = [teacher.eval()]
        self.losses = nn.ModuleDict(losses)
        self.weights = dict(weights)
        self.hint_pairs = list(hint_pairs)
        self.hint_stage = hint_stage
        self.hint_epochs = hint_epochs
        self.stage = "hints" if hint_stage == "stagewise" and self.needs_hints else "all"
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher_hooks = hooks_for(teacher, [t for t, _ in self.hint_pairs], "teacher hint") if self.needs_hints else None
        self.student_hooks = hooks_for(student, [s for _, s in self.hint_pairs], "student guided") if self.needs_hints else None

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    @property
    def needs_hints(self) -> bool:
        return any(m.uses_hints for m in self.losses.values())

    def on_epoch_start(self, epoch: int) -> None:
        if self.hint_stage == "stagewise" and self.needs_hints:
            self.stage = "hints" if epoch < self.hint_epochs else "all"

    def active(self) -> list[str]:
        """Loss names that train in the current stage."""
        if self.hint_stage != "stagewise" or not self.needs_hints:
            return list(self.losses)
        want_hints = self.stage == "hints"
        return [k for k, m in self.losses.items() if m.uses_hints == want_hints]

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> Outputs:
        """Online teacher: eval mode, no gradients."""
        self.teacher.eval()
        return forward_outputs(self.teacher, x, self.teacher_hooks)

    def training_losses(self, batch: dict[str, Any], info: StepInfo) -> dict[str, Tensor]:
        x, y = batch["x"], batch.get("y")
        t_out: Outputs = batch["teacher"] if batch.get("teacher") is not None else self.teacher_outputs(x)
        names = self.active()
        uses_hints = any(self.losses[k].uses_hints for k in names)
        s_out = forward_outputs(self.model, x, self.student_hooks if uses_hints else None)
        return {k: self.weights[k] * self.losses[k](s_out, t_out, y) for k in names}
