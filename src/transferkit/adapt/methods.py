"""Deep domain-adaptation methods: one :class:`~transferkit.engine.Method` each.

A batch is ``((xs, ys), xt)``: a labelled source batch and an unlabelled target
batch. Every method returns the source cross-entropy plus its transfer term,
weighted by a :class:`~transferkit.adapt.schedules.WeightSchedule` of the
training progress, so the logged terms are exactly what was optimised. Any
:class:`~transferkit.models.Classifier` (any backbone) can be adapted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from ..engine import Method, StepInfo
from ..engine.registry import Registry
from ..models import Classifier, FeatureHooks
from ..options import option
from .losses import (
    MMD_ESTIMATES,
    CORALLoss,
    DomainDiscriminator,
    MCCLoss,
    MultiKernelMMD,
    MultilinearMap,
    domain_bce,
    entropy,
    grad_reverse,
)
from .schedules import WeightSchedule

Batch = tuple[tuple[Tensor, Tensor], Tensor]

ADAPT_METHODS: Registry[type[Method]] = Registry("adaptation method")
"""Deep adaptation methods by name; a method registers itself with its options' config."""


@dataclass
class DiscriminatorConfig:
    hidden: int = option(500, "Width of the domain discriminator's hidden layers.", min=1, cli="--discriminator-hidden")


@dataclass
class ADDAConfig:
    hidden: int = option(500, "Width of the domain discriminator's hidden layers.", min=1, cli="--discriminator-hidden")
    encoder_lr: float = option(0.1, "ADDA: learning rate of the target encoder as a multiple of --lr (the discriminator's).",
                               min=0, min_open=True)
    adam_beta1: float = option(0.5, "ADDA: Adam's beta1 for both players (0.5 as in the ADDA paper; ignored by SGD).",
                               min=0, max=1, max_open=True)


@dataclass
class DANConfig:
    layers: tuple[str, ...] = option(("features", "logits"), "Layers to align: features, logits or a module path (repeatable).",
                                     cli="--dan-layer", multiple=True)
    estimate: str = option("unbiased", "MMD estimate (linear = linear-time).", choices=MMD_ESTIMATES, cli="--mmd-estimate")


@dataclass
class CDANConfig:
    hidden: int = option(500, "Width of the domain discriminator's hidden layers.", min=1, cli="--discriminator-hidden")
    entropy_conditioning: bool = option(True, "Weight samples by 1 + exp(-entropy); --no-entropy-conditioning weighs all equally.", flag="--no-entropy-conditioning")
    max_dim: int = option(4096, "Randomized multilinear map above this width.", min=1)


@dataclass
class MCCConfig:
    temperature: float = option(2.5, "Softmax temperature of the class-confusion matrix.", min=0, min_open=True)


class AdaptMethod(Method):
    """Base: ``L = CE(source) + lambda(p) * L_transfer``; subclasses define the transfer term."""

    name = "adapt"
    default_schedule = WeightSchedule("constant", 1.0)

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None):
        super().__init__(model)
        self.schedule = schedule or self.default_schedule

    def forward_both(self, xs: Tensor, xt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Features and logits of both domains from one pass over the concatenated batch."""
        f, logits = self.model.forward_all(torch.cat([xs, xt]))
        n = len(xs)
        return f[:n], f[n:], logits[:n], logits[n:]

    def transfer(self, fs: Tensor, ft: Tensor, ls: Tensor, lt: Tensor, info: StepInfo) -> dict[str, Tensor]:
        raise NotImplementedError

    def training_losses(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        (xs, ys), xt = batch
        fs, ft, ls, lt = self.forward_both(xs, xt)
        out = {"ce": F.cross_entropy(ls, ys)}
        out.update(self.transfer(fs, ft, ls, lt, info))
        return out


@ADAPT_METHODS.register("source-only", "train on source labels only (baseline)")
class SourceOnly(Method):
    """Train on the labelled source only: ``L = CE(f(x_s), y_s)``. The baseline every
    method must beat, and ADDA's first stage. Target batches, if any, are ignored."""

    name = "source-only"

    def training_losses(self, batch: Any, info: StepInfo) -> dict[str, Tensor]:
        (xs, ys), _ = batch if isinstance(batch[0], tuple | list) else (batch, None)
        return {"ce": F.cross_entropy(self.model(xs), ys)}


@ADAPT_METHODS.register("dan", "multi-kernel MMD on features and logits (Long et al. 2015)", DANConfig)
class DAN(AdaptMethod):
    """Deep Adaptation Network: MK-MMD on several layers.

    ``L = CE + lambda(p) sum_{l in layers} MK-MMD^2(h^l_s, h^l_t)``, layers being
    ``features`` (after the bottleneck), ``logits`` and/or module paths such as
    ``backbone.fc`` (captured with forward hooks). ``estimate`` chooses the
    biased, unbiased or linear-time MMD estimate.

    Long, Cao, Wang, Jordan. "Learning Transferable Features with Deep
    Adaptation Networks." ICML 2015.
    """

    name = "dan"

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None,
                 layers: Sequence[str] = ("features", "logits"), estimate: str = "unbiased"):
        super().__init__(model, schedule)
        self.layers = list(layers)
        self.hooked = [name for name in self.layers if name not in ("features", "logits")]
        FeatureHooks(model, self.hooked)  # fails early on a bad module path
        self.mmd = MultiKernelMMD(estimate=estimate)

    def training_losses(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        (xs, ys), xt = batch
        n = len(xs)
        with FeatureHooks(self.model, self.hooked) as hooked:
            fs, ft, ls, lt = self.forward_both(xs, xt)
        total = fs.new_zeros(())
        for name in self.layers:
            if name == "features":
                a, b = fs, ft
            elif name == "logits":
                a, b = ls, lt
            else:
                h = hooked[name].flatten(1)
                a, b = h[:n], h[n:]
            total = total + self.mmd(a, b)
        return {"ce": F.cross_entropy(ls, ys), "mmd": self.schedule(info.progress) * total}


@ADAPT_METHODS.register("deep-coral", "covariance alignment of features (Sun & Saenko 2016)")
class DeepCORAL(AdaptMethod):
    """Deep CORAL: ``L = CE + lambda(p) ||C_s - C_t||_F^2 / (4 d^2)`` on the features.

    Sun and Saenko. "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation." ECCV 2016 workshops.
    """

    name = "deep-coral"

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None):
        super().__init__(model, schedule)
        self.coral = CORALLoss()

    def transfer(self, fs: Tensor, ft: Tensor, ls: Tensor, lt: Tensor, info: StepInfo) -> dict[str, Tensor]:
        return {"coral": self.schedule(info.progress) * self.coral(fs, ft)}


@ADAPT_METHODS.register("dann", "domain-adversarial, gradient reversal (Ganin et al. 2016)", DiscriminatorConfig)
class DANN(AdaptMethod):
    """Domain-adversarial training with a gradient reversal layer.

    ``min_{F,C} max_D  CE(C(F(x_s)), y_s) - L_d(D(R_lambda(F(x))))`` where L_d is
    the binary domain cross-entropy and R_lambda reverses gradients scaled by
    ``lambda(p) = 2 / (1 + exp(-10 p)) - 1`` (the default schedule).

    Ganin et al. "Domain-Adversarial Training of Neural Networks." JMLR 2016.
    """

    name = "dann"
    default_schedule = WeightSchedule("dann", 1.0)

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, hidden: int = 500):
        super().__init__(model, schedule)
        self.discriminator = DomainDiscriminator(model.feature_dim, hidden)

    def transfer(self, fs: Tensor, ft: Tensor, ls: Tensor, lt: Tensor, info: StepInfo) -> dict[str, Tensor]:
        coeff = self.schedule(info.progress)
        d = self.discriminator(grad_reverse(torch.cat([fs, ft]), coeff))
        n = len(fs)
        return {"domain": domain_bce(d[:n], d[n:])}


@ADAPT_METHODS.register("cdan", "conditional adversarial with entropy conditioning (Long et al. 2018)", CDANConfig)
class CDAN(AdaptMethod):
    """Conditional adversarial adaptation with entropy conditioning (CDAN+E).

    The discriminator sees ``T(f, g) = f (x) g`` (features times detached class
    probabilities, randomized when wide) through a gradient reversal layer with
    the DANN ramp; each sample is weighted by ``w = 1 + exp(-H(g))``, normalised
    to mean 1 within its domain, so confident predictions count more.

    Long, Cao, Wang, Jordan. "Conditional Adversarial Domain Adaptation." NeurIPS 2018.
    """

    name = "cdan"
    default_schedule = WeightSchedule("dann", 1.0)

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, hidden: int = 500,
                 entropy_conditioning: bool = True, max_dim: int = 4096):
        super().__init__(model, schedule)
        self.map = MultilinearMap(model.feature_dim, model.num_classes, max_dim)
        self.discriminator = DomainDiscriminator(self.map.out_features, hidden)
        self.entropy_conditioning = entropy_conditioning

    def transfer(self, fs: Tensor, ft: Tensor, ls: Tensor, lt: Tensor, info: StepInfo) -> dict[str, Tensor]:
        coeff = self.schedule(info.progress)
        g = F.softmax(torch.cat([ls, lt]), 1).detach()
        h = self.map(torch.cat([fs, ft]), g)
        d = self.discriminator(grad_reverse(h, coeff))
        n = len(fs)
        ws = wt = None
        if self.entropy_conditioning:
            w = 1.0 + torch.exp(-entropy(g))
            ws, wt = w[:n] / w[:n].mean(), w[n:] / w[n:].mean()
        return {"domain": domain_bce(d[:n], d[n:], ws, wt)}


@ADAPT_METHODS.register("mcc", "minimum class confusion on target predictions (Jin et al. 2020)", MCCConfig)
class MCC(AdaptMethod):
    """Minimum Class Confusion: ``L = CE + lambda(p) L_MCC(target logits)``.

    Jin, Wang, Long, Wang. "Minimum Class Confusion for Versatile Domain
    Adaptation." ECCV 2020.
    """

    name = "mcc"

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, temperature: float = 2.5):
        super().__init__(model, schedule)
        self.mcc = MCCLoss(temperature)

    def transfer(self, fs: Tensor, ft: Tensor, ls: Tensor, lt: Tensor, info: StepInfo) -> dict[str, Tensor]:
        return {"mcc": self.schedule(info.progress) * self.mcc(lt)}


@ADAPT_METHODS.register("adda", "source pre-training, then adversarial target encoder (Tzeng et al. 2017)", ADDAConfig)
class ADDA(Method):
    """Adversarial Discriminative Domain Adaptation, stage 2.

    Stage 1 trains a source encoder M_s and classifier C on the source
    (:class:`SourceOnly`). Stage 2 (this method) keeps M_s and C frozen, starts a
    target encoder M_t = M_s and plays the inverted-label GAN game

    ``min_D  -E_s log D(M_s(x_s)) - E_t log(1 - D(M_t(x_t)))``
    ``min_{M_t}  -E_t log D(M_t(x_t))``

    in one step: D's loss sees detached features; the encoder's loss goes
    through D with its parameters detached, so each player moves only its own
    parameters. The model trained (and checkpointed) is ``C(M_t(x))``.

    The two players have their own optimiser settings (parameter groups): the
    discriminator learns at ``--lr``, the target encoder at ``encoder_lr * --lr``,
    and with Adam both use ``beta1 = adam_beta1`` (0.5, the paper's setting and
    GAN practice). With the encoder at the discriminator's rate and Adam's
    beta1 = 0.9, an MLP on a feature table collapsed: the discriminator separated
    the domains within a few dozen steps, the non-saturating loss then pushed the
    whole target into the one region D called source, and the frozen head gave
    every target row the same class (10% on a 10-class table, source-only 83%).

    Tzeng, Hoffman, Saenko, Darrell. "Adversarial Discriminative Domain
    Adaptation." CVPR 2017.
    """

    name = "adda"

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, hidden: int = 500,
                 encoder_lr: float = 0.1, adam_beta1: float = 0.5):
        super().__init__(model)
        self.schedule = schedule or WeightSchedule("constant", 1.0)
        self.encoder_lr = encoder_lr
        self.adam_beta1 = adam_beta1
        self.source_encoder = [copy.deepcopy(model).eval()]  # a list: not a sub-module, not optimised or saved
        for p in self.source_encoder[0].parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(False)
        self.discriminator = DomainDiscriminator(model.feature_dim, hidden)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The discriminator at ``lr``, the target encoder at ``encoder_lr * lr``; Adam's betas ``(adam_beta1, 0.999)``."""
        betas = (self.adam_beta1, 0.999)
        encoder = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": list(self.discriminator.parameters()), "lr": lr, "betas": betas},
                {"params": encoder, "lr": lr * self.encoder_lr, "betas": betas}]

    def _apply(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> ADDA:
        super()._apply(fn, *args, **kw)
        self.source_encoder[0]._apply(fn, *args, **kw)
        return self

    def training_losses(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        (xs, _), xt = batch
        source_encoder = self.source_encoder[0]
        # the same mode on both sides: dropout noise on target features only would let the
        # discriminator tell the domains apart by the noise, not by the features
        source_encoder.train(self.model.training)
        with torch.no_grad():
            fs = source_encoder.features(xs)
        ft = self.model.features(xt)
        d_loss = domain_bce(self.discriminator(fs), self.discriminator(ft.detach()))
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        d_t = functional_call(self.discriminator, frozen, (ft,))
        g_loss = F.binary_cross_entropy_with_logits(d_t, torch.ones_like(d_t))
        return {"discriminator": d_loss, "encoder": self.schedule(info.progress) * g_loss}


def create_method(name: str, model: Classifier, schedule: WeightSchedule | None = None, **options: Any) -> Method:
    """Build a registered method around ``model``; ``options`` are its config's fields (checked)."""
    entry = ADAPT_METHODS.entry(name)
    cfg = entry.make_config(**options)
    if entry.obj is SourceOnly:
        return SourceOnly(model)
    return entry.obj(model, schedule, **(vars(cfg) if cfg is not None else {}))  # type: ignore[call-arg]
