"""Distillation losses: one small ``nn.Module`` each, composable by name and weight.

Every loss reads what it needs from two :class:`Outputs` (student and teacher)
and the hard labels, so :class:`~transferkit.distill.method.Distill` can sum any
combination ``{"kd": 1.0, "fitnet": 0.5, ...}`` without knowing the maths:

=========  ==========================================  =====================
name       what it matches                             reads
=========  ==========================================  =====================
``ce``     hard labels (cross-entropy)                 logits, labels
``kd``     soft targets at temperature T (Hinton)      logits (+ labels)
``fitnet`` hint layer through a learned regressor      hint-layer outputs
``at``     spatial attention maps                      hint-layer outputs
``rkd``    distances and angles between examples       embeddings
``dkd``    target and non-target parts of KD           logits, labels
=========  ==========================================  =====================

When a batch has no labels (an unlabelled transfer set) the teacher's
arg-max stands in for the label wherever one is needed (``ce``, ``dkd``) and
``kd`` keeps only its soft term: the teacher's outputs are the only labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.registry import Registry
from ..errors import TransferkitError
from ..ops import sq_distances
from ..options import option


@dataclass
class Outputs:
    """What one network produced for a batch.

    Attributes:
        logits: (N, C) class scores.
        embedding: (N, D) penultimate features (a ``Classifier``'s ``features``; the logits otherwise).
        hints: outputs of the hint (teacher) or guided (student) layers, in pair order.
    """

    logits: Tensor
    embedding: Tensor
    hints: list[Tensor] = field(default_factory=list)


def labels_or_teacher(y: Tensor | None, teacher: Outputs) -> Tensor:
    """Hard labels, or the teacher's arg-max on an unlabelled transfer set."""
    return y if y is not None else teacher.logits.argmax(1)


@dataclass
class BuildContext:
    """What a loss may need to build itself: the pair and, lazily, their hint-layer outputs on a sample."""

    teacher: nn.Module
    student: nn.Module
    sample: Tensor
    hint_outputs: Callable[[], tuple[list[Tensor], list[Tensor]]]  # (student hints, teacher hints)


class DistillLoss(nn.Module):
    """Base: ``forward(student, teacher, y) -> scalar``; ``uses_hints`` says whether hint layers are needed."""

    uses_hints = False

    @classmethod
    def build(cls, context: BuildContext, **options: Any) -> DistillLoss:
        """The loss for this teacher/student pair with its config's options (default: ``cls(**options)``)."""
        return cls(**options)

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        raise NotImplementedError


LOSSES: Registry[type[DistillLoss]] = Registry("distillation loss name")
"""Distillation losses by name; one registers itself with its options' config."""


@dataclass
class KDConfig:
    temperature: float = option(4.0, "Softmax temperature T of kd and dkd.", min=0, min_open=True)
    alpha: float = option(0.9, "kd: weight of the soft targets; hard labels get 1 - alpha.", min=0, max=1)


@dataclass
class ATConfig:
    at_p: float = option(2.0, "at: power p of the attention map sum_c |A_c|^p.", min=0, min_open=True)


@dataclass
class RKDConfig:
    rkd_distance: float = option(25.0, "rkd: weight of the distance term.", min=0)
    rkd_angle: float = option(50.0, "rkd: weight of the angle term.", min=0)


# ----------------------------------------------------------------- functional
def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 KL(softmax(t/T) || softmax(s/T))`` averaged over the batch."""
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * (t * t)


# --------------------------------------------------------------------- losses
class CrossEntropy(DistillLoss):
    """Hard-label cross-entropy, ``L = -log softmax(z_s)_y``.

    On an unlabelled transfer set ``y`` is the teacher's arg-max (hard pseudo-labels).
    """

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        return F.cross_entropy(student.logits, labels_or_teacher(y, teacher))


class KDLoss(DistillLoss):
    """Knowledge distillation with soft targets (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531).

    .. math::
        p^T_i = \\frac{\\exp(z_i / T)}{\\sum_j \\exp(z_j / T)}, \\qquad
        \\mathcal{L} = \\alpha\\, T^2\\, \\mathrm{KL}(p^T_{teacher} \\,\\|\\, p^T_{student})
            + (1 - \\alpha)\\, \\mathrm{CE}(z_{student}, y)

    The soft-target gradient scales as ``1/T^2`` (section 2: at high T,
    ``dC/dz_i ~ (z_i - v_i) / (N T^2)``), so the soft term is multiplied by
    ``T^2`` to keep the relative contribution of hard and soft targets
    unchanged when T changes. ``alpha`` is the weight of the soft term; the
    hard-label loss gets ``1 - alpha``. Without labels only the soft term is used.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        if temperature <= 0:
            raise TransferkitError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise TransferkitError(f"alpha (the soft-target weight of KD) must be in [0, 1], got {alpha}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        soft = soft_kl(student.logits, teacher.logits, self.temperature)
        if y is None or self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1 - self.alpha) * F.cross_entropy(student.logits, y)


def _regressor(s: Tensor, t: Tensor) -> nn.Module:
    """A learned map from the guided layer's shape to the hint layer's shape."""
    if s.dim() == 4 and t.dim() == 4:
        conv = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1, bias=False)
        if s.shape[2:] == t.shape[2:]:
            return conv
        return nn.Sequential(conv, nn.AdaptiveAvgPool2d(tuple(t.shape[2:])))
    if s.dim() >= 2 and t.dim() == 2:
        return nn.Sequential(nn.Flatten(), nn.Linear(s[0].numel(), t.shape[1], bias=False))
    raise TransferkitError(
        f"fitnet cannot map a guided layer of shape {tuple(s.shape[1:])} to a hint layer of shape "
        f"{tuple(t.shape[1:])}; pick layers that are both (C, H, W) or whose hint is a vector"
    )


class FitNetLoss(DistillLoss):
    """FitNet hints (Romero et al., 2015, "FitNets: Hints for Thin Deep Nets", ICLR).

    .. math::
        \\mathcal{L}_{HT} = \\frac{1}{2} \\big\\| u_h(x; W_{hint}) - r(v_g(x; W_{guided}); W_r) \\big\\|^2

    ``u_h`` is the teacher's hint layer, ``v_g`` the student's guided layer and
    ``r`` a learned regressor (a 1x1 convolution for feature maps, a linear map
    for vectors) that is trained with the student. Averaged over elements and
    summed over hint pairs. Stage-wise training (the paper) optimises this
    alone for the first epochs, then KD; joint training adds it throughout
    (see ``DistillSpec.hint_stage``).
    """

    uses_hints = True

    def __init__(self, regressors: Sequence[nn.Module]):
        super().__init__()
        self.regressors = nn.ModuleList(regressors)

    @classmethod
    def build(cls, context: BuildContext, **options: Any) -> FitNetLoss:
        student_hints, teacher_hints = context.hint_outputs()
        return cls.for_shapes(student_hints, teacher_hints)

    @classmethod
    def for_shapes(cls, student_hints: Sequence[Tensor], teacher_hints: Sequence[Tensor]) -> FitNetLoss:
        return cls([_regressor(s, t) for s, t in zip(student_hints, teacher_hints, strict=True)])

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        total = student.logits.new_zeros(())
        for r, s, t in zip(self.regressors, student.hints, teacher.hints, strict=True):
            total = total + 0.5 * F.mse_loss(r(s), t)
        return total


def attention_map(x: Tensor, p: float = 2.0) -> Tensor:
    """``Q = normalize(mean_c |A_c|^p)`` flattened: the spatial attention of a (N, C, H, W) map."""
    return F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1)


class AttentionTransfer(DistillLoss):
    """Attention transfer (Zagoruyko & Komodakis, 2017, "Paying More Attention to Attention", ICLR).

    .. math::
        Q = \\mathrm{vec}\\Big(\\frac{1}{C}\\sum_c |A_c|^p\\Big), \\qquad
        \\mathcal{L}_{AT} = \\sum_{j} \\mathrm{mean}\\Big( \\Big(\\frac{Q_S^j}{\\|Q_S^j\\|_2}
            - \\frac{Q_T^j}{\\|Q_T^j\\|_2}\\Big)^2 \\Big)

    with ``p = 2`` as in the authors' code (their ``beta = 1e3`` is the weight in
    the config). Student maps of another spatial size are average-pooled to
    the teacher's size. Needs (N, C, H, W) layers.
    """

    uses_hints = True

    @classmethod
    def build(cls, context: BuildContext, **options: Any) -> AttentionTransfer:
        return cls(options["at_p"])

    def __init__(self, p: float = 2.0):
        super().__init__()
        self.p = p

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        total = student.logits.new_zeros(())
        for s, t in zip(student.hints, teacher.hints, strict=True):
            if s.dim() != 4 or t.dim() != 4:
                raise TransferkitError(
                    f"attention transfer needs convolutional (N, C, H, W) layers, got {tuple(s.shape)} and {tuple(t.shape)}; "
                    "pick conv layers with --hint or use fitnet"
                )
            if s.shape[2:] != t.shape[2:]:
                s = F.adaptive_avg_pool2d(s, (t.shape[2], t.shape[3]))
            total = total + (attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()
        return total


def _pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    d = sq_distances(e, e).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: Tensor) -> Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # diff[j, i] = e_i - e_j, normalised
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # <e_i - e_j, e_k - e_j> over (j, i, k)


class RKDLoss(DistillLoss):
    """Relational knowledge distillation (Park et al., 2019, CVPR), distance and angle.

    .. math::
        \\psi_D(t_i, t_j) = \\frac{\\|t_i - t_j\\|_2}{\\mu}, \\quad
        \\mu = \\frac{1}{|\\chi^2|} \\sum_{(i,j)} \\|t_i - t_j\\|_2, \\qquad
        \\psi_A(t_i, t_j, t_k) = \\Big\\langle \\frac{t_i - t_j}{\\|t_i - t_j\\|}, \\frac{t_k - t_j}{\\|t_k - t_j\\|} \\Big\\rangle

    .. math::
        \\mathcal{L} = w_D \\sum_{(i,j)} \\ell_\\delta(\\psi_D(t_i,t_j), \\psi_D(s_i,s_j))
            + w_A \\sum_{(i,j,k)} \\ell_\\delta(\\psi_A(t), \\psi_A(s))

    ``l_delta`` is the Huber (smooth-L1) loss averaged over pairs/triplets;
    ``w_D = 25, w_A = 50`` as in the paper. Acts on the embeddings (a
    ``Classifier``'s penultimate features), so the dimensions may differ.
    """

    @classmethod
    def build(cls, context: BuildContext, **options: Any) -> RKDLoss:
        return cls(options["rkd_distance"], options["rkd_angle"])

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    @staticmethod
    def distance_term(s: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            td = _pairwise_distances(t)
            td = td / td[td > 0].mean()
        sd = _pairwise_distances(s)
        sd = sd / sd[sd > 0].mean()
        return F.smooth_l1_loss(sd, td)

    @staticmethod
    def angle_term(s: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            ta = _angles(t)
        return F.smooth_l1_loss(_angles(s), ta)

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        s, t = student.embedding.flatten(1), teacher.embedding.flatten(1)
        total = student.logits.new_zeros(())
        if self.distance_weight:
            total = total + self.distance_weight * self.distance_term(s, t)
        if self.angle_weight:
            total = total + self.angle_weight * self.angle_term(s, t)
        return total


# ------------------------------------------------------------------- registry
LOSSES.add("ce", "cross-entropy on hard labels (teacher arg-max without labels)", CrossEntropy)
LOSSES.add("kd", "Hinton KD: T^2 KL of softened outputs, mixed with hard-label CE by alpha", KDLoss, KDConfig)
LOSSES.add("fitnet", "FitNet hints: 1/2 MSE(regressor(guided layer), hint layer)", FitNetLoss)
LOSSES.add("at", "attention transfer between (C, H, W) layer pairs", AttentionTransfer, ATConfig)
LOSSES.add("rkd", "relational KD: distance (25) and angle (50) Huber terms on embeddings", RKDLoss, RKDConfig)


def parse_losses(items: Sequence[str] | dict[str, float]) -> dict[str, float]:
    """``["kd=1", "fitnet=0.5"]`` or ``{"kd": 1.0}`` -> ``{"kd": 1.0, "fitnet": 0.5}``; names are checked."""
    from ..errors import unknown_name

    pairs: dict[str, float] = {}
    raw: list[tuple[str, str | float]]
    if isinstance(items, dict):
        raw = [(str(k), v) for k, v in items.items()]
    else:
        raw = []
        for item in items:
            name, sep, value = str(item).partition("=")
            raw.append((name.strip(), value if sep else 1.0))
    for name, w in raw:
        if name not in LOSSES:
            raise unknown_name("distillation loss name", name, LOSSES)
        try:
            weight = float(w)
        except (TypeError, ValueError):
            raise TransferkitError(f"loss weight for '{name}' must be a number, got '{w}' (write NAME=WEIGHT, e.g. kd=1.0)") from None
        if weight < 0:
            raise TransferkitError(f"loss weight for '{name}' must be >= 0, got {weight}")
        pairs[name] = weight
    if not pairs:
        raise TransferkitError(f"no distillation loss given; choose from {', '.join(LOSSES)} (e.g. --loss kd=1)")
    return pairs
