"""Unsupervised validators: score a model without target labels.

Each validator maps the model's outputs on (a sample of) the unlabelled
target set, and on a held-out labelled source split, to one number; higher is
better. They choose the checkpoint through the Trainer's ``score=`` hook.
Selection with target labels (``oracle``) exists only as an explicit upper
bound and is never a default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import TensorData
from ..engine.evaluate import batched_forward
from ..errors import TransferkitError, unknown_name
from ..models import Classifier
from ..ops import domain_density_ratio
from .losses import entropy


@dataclass
class Outputs:
    """What validators look at: target probabilities/features, source-val features/losses."""

    target_probs: Tensor
    target_features: Tensor
    source_features: Tensor | None = None
    source_losses: Tensor | None = None
    source_correct: Tensor | None = None


def information_maximization(probs: Tensor) -> float:
    """IM = H(mean_i p_i) - mean_i H(p_i): diverse and confident predictions score high.

    Gomes, Krause, Perona. "Discriminative clustering by regularized information
    maximization." NeurIPS 2010; used as a validator by Musgrave et al. (2022).
    """
    return float(entropy(probs.mean(0, keepdim=True))[0] - entropy(probs).mean())


def neg_entropy(probs: Tensor) -> float:
    """-mean_i H(p_i) (Morerio, Cavazza, Murino. "Minimal-entropy correlation alignment." ICLR 2018)."""
    return float(-entropy(probs).mean())


def soft_neighborhood_density(probs: Tensor, temperature: float = 0.05) -> float:
    """SND: with z_i = p_i / ||p_i||, s_ij = z_i . z_j (j != i), q_i = softmax_j(s_ij / tau),
    SND = mean_i H(q_i). Dense neighbourhoods (clustered targets) score high.

    Saito, Kim, Teterwak, Sclaroff, Darrell, Saenko. "Tune it the Right Way:
    Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density." ICCV 2021.
    """
    z = F.normalize(probs.double(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    q = F.softmax(sim / temperature, dim=1)
    h = -(q * torch.log(q.clamp_min(1e-300))).sum(1)
    return float(h.mean())


def dev_risk(losses: Tensor, weights: Tensor) -> float:
    """DEV's control-variate estimate of the target risk from weighted source losses:
    ``L_w = w * l``, ``eta = -Cov(L_w, w) / Var(w)``, ``risk = mean(L_w) + eta mean(w) - eta``.

    You, Wang, Long, Jordan. "Towards Accurate Model Selection in Deep
    Unsupervised Domain Adaptation." ICML 2019.
    """
    lw = (weights * losses).double()
    w = weights.double()
    var = w.var(unbiased=True)
    if var <= 0:
        return float(lw.mean())
    cov = ((lw - lw.mean()) * (w - w.mean())).sum() / (len(w) - 1)
    eta = -cov / var
    return float(lw.mean() + eta * w.mean() - eta)


def density_ratio(source_features: Tensor, target_features: Tensor, seed: int = 0) -> Tensor:
    """w(x) = p_t(x)/p_s(x) = (n_s/n_t) P(target|x)/P(source|x) from a logistic-regression
    domain classifier fitted on the features (the DEV density-ratio step; see
    :func:`transferkit.ops.domain_density_ratio`). ``seed`` is kept for compatibility:
    the deterministic lbfgs solver does not use it."""
    xs = source_features.double().cpu().numpy()
    xt = target_features.double().cpu().numpy()
    return torch.from_numpy(domain_density_ratio(xs, xt, C=1.0, max_iter=200))


def deep_embedded_validation(out: Outputs) -> float:
    """-DEV risk (higher is better); see :func:`dev_risk` and :func:`density_ratio`."""
    if out.source_features is None or out.source_losses is None:
        raise TransferkitError("the dev validator needs a labelled source validation split")
    w = density_ratio(out.source_features, out.target_features)
    return -dev_risk(out.source_losses.cpu(), w)


def source_accuracy(out: Outputs) -> float:
    """Accuracy (%) on the held-out source validation split."""
    if out.source_correct is None:
        raise TransferkitError("the source-acc validator needs a labelled source validation split")
    return float(out.source_correct.float().mean() * 100)


VALIDATORS: dict[str, Callable[[Outputs], float]] = {
    "im": lambda o: information_maximization(o.target_probs),
    "snd": lambda o: soft_neighborhood_density(o.target_probs),
    "dev": deep_embedded_validation,
    "entropy": lambda o: neg_entropy(o.target_probs),
    "source-acc": source_accuracy,
}

VALIDATOR_DOCS: dict[str, str] = {
    "im": "information maximization: H(mean p) - mean H(p) on target (higher is better)",
    "snd": "soft neighbourhood density of target predictions (Saito et al. 2021)",
    "dev": "deep embedded validation: importance-weighted source-val loss (You et al. 2019)",
    "entropy": "negative mean prediction entropy on target",
    "source-acc": "accuracy on the held-out source validation split",
}


def check_validator(name: str) -> str:
    if name not in VALIDATORS:
        raise unknown_name("validator", name, VALIDATORS)
    return name


@torch.no_grad()
def model_outputs(model: Classifier, target: Tensor, source_val: TensorData | None, batch_size: int = 1024) -> Outputs:
    """One eval-mode pass over the target sample and the source validation split."""
    ft, lt = batched_forward(model, target, batch_size, model.forward_all)
    out = Outputs(F.softmax(lt.float(), 1), ft.float())
    if source_val is not None and source_val.y is not None and len(source_val):
        fsv, lsv = batched_forward(model, source_val.x, batch_size, model.forward_all)
        out.source_features = fsv.float()
        out.source_losses = F.cross_entropy(lsv.float(), source_val.y, reduction="none")
        out.source_correct = lsv.argmax(1) == source_val.y
    return out


def score(name: str, model: Classifier, target: Tensor, source_val: TensorData | None) -> float:
    """Score ``model`` with the validator ``name`` (higher is better)."""
    return VALIDATORS[check_validator(name)](model_outputs(model, target, source_val))
