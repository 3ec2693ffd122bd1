"""Teacher-output cache: a frozen teacher on deterministic inputs is run once.

When the inputs of every epoch are the same tensors (no random augmentation),
the teacher's logits, embeddings and hint-layer outputs are the same every
epoch. :class:`TeacherCache` computes them in one eval-mode pass and a
distillation batch slices them by index, so an epoch costs about what a
student-only epoch costs. With random augmentation the teacher must see the
augmented batch, so it runs online (see :class:`~transferkit.distill.method.Distill`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..engine.evaluate import batched_forward
from ..models import FeatureHooks
from .losses import Outputs
from .method import forward_outputs


@dataclass
class TeacherCache:
    """Teacher outputs for every example of a fixed input tensor, sliced by index."""

    logits: Tensor
    embedding: Tensor | None
    hints: list[Tensor]
    seconds: float = 0.0

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: nn.Module,
        x: Tensor,
        hooks: FeatureHooks | None = None,
        keep_embedding: bool = False,
        batch_size: int = 1024,
    ) -> TeacherCache:
        """One pass of ``teacher`` (eval mode) over ``x``; keeps the embedding only when a loss reads it."""
        t0 = time.perf_counter()

        def outputs(xb: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
            out = forward_outputs(teacher, xb, hooks)
            return out.logits, out.embedding if keep_embedding else None, list(out.hints)

        logits, emb, hints = batched_forward(teacher, x, batch_size, outputs)
        return cls(logits=logits, embedding=emb, hints=hints, seconds=time.perf_counter() - t0)

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def slice(self, idx: Tensor) -> Outputs:
        """The teacher's outputs for examples ``idx``."""
        logits = self.logits[idx]
        emb = self.embedding[idx] if self.embedding is not None else logits
        return Outputs(logits, emb, [h[idx] for h in self.hints])

    @property
    def nbytes(self) -> int:
        tensors = [self.logits, *self.hints] + ([self.embedding] if self.embedding is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)
