"""Each distillation loss against an independent computation, the T^2 gradient scale, and golden values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.distill import (
    AttentionTransfer,
    CrossEntropy,
    DKDLoss,
    FitNetLoss,
    KDLoss,
    Outputs,
    RKDLoss,
    parse_losses,
)
from transferkit.errors import TransferkitError

# fixed small inputs, written out so a change in any RNG cannot move the goldens
S = torch.tensor([[1.0, -0.5, 0.3, 2.0, -1.2], [0.2, 0.1, -0.3, 0.5, 1.5], [-1.0, 2.2, 0.0, 0.4, -0.6], [0.7, -0.9, 1.1, -0.2, 0.3]])
T = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0], [0.0, 0.3, -0.8, 1.0, 2.5], [-1.5, 3.0, 0.2, 0.1, -1.0], [1.2, -1.5, 2.0, -0.5, 0.0]])
Y = torch.tensor([3, 4, 1, 0])


def out(z: torch.Tensor, hints: list[torch.Tensor] | None = None) -> Outputs:
    return Outputs(z, z, hints or [])


def softmax_by_hand(z: torch.Tensor, temp: float) -> torch.Tensor:
    e = torch.exp(z.double() / temp)
    return e / e.sum(1, keepdim=True)


# ------------------------------------------------------------------------- KD
@pytest.mark.parametrize("temp,alpha", [(1.0, 1.0), (4.0, 0.9), (20.0, 0.5)])
def test_kd_matches_hand_written_formula(temp: float, alpha: float) -> None:
    pt, ps = softmax_by_hand(T, temp), softmax_by_hand(S, temp)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    ce = -torch.log(softmax_by_hand(S, 1.0)[torch.arange(4), Y]).mean()
    want = alpha * temp**2 * kl + (1 - alpha) * ce
    got = KDLoss(temp, alpha)(out(S.double()), out(T.double()), Y)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)


def test_kd_soft_term_matches_f_kl_div_and_ignores_alpha_without_labels() -> None:
    temp = 3.0
    ref = F.kl_div(F.log_softmax(S / temp, 1), F.softmax(T / temp, 1), reduction="batchmean") * temp**2
    assert KDLoss(temp, 0.3)(out(S), out(T), None).item() == pytest.approx(ref.item(), rel=1e-5)
    assert KDLoss(temp, 1.0)(out(T), out(T), Y).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_t_squared_keeps_the_soft_gradient_scale() -> None:
    """d(T^2 KL)/dz_s = T (q - p) / N exactly, which tends to (z - v) / (C N) for zero-mean logits (Hinton eq. 3)."""
    zs = S - S.mean(1, keepdim=True)
    zt = T - T.mean(1, keepdim=True)
    limit = (zs - zt) / (zs.shape[1] * zs.shape[0])
    norms, errors = [], []
    for temp in (10.0, 20.0, 50.0):
        z = zs.clone().requires_grad_(True)
        KDLoss(temp, 1.0)(out(z), out(zt), None).backward()
        exact = temp * (F.softmax(zs / temp, 1) - F.softmax(zt / temp, 1)) / zs.shape[0]
        assert torch.allclose(z.grad, exact, atol=1e-6)
        norms.append(float(z.grad.norm()))
        errors.append(float((z.grad - limit).abs().max()))
    # the high-temperature limit is approached as O(1/T)
    assert errors[0] < 0.2 * float(limit.abs().max())
    assert errors[2] < errors[0] / 3
    # without T^2 the gradient would shrink by 25x from T=10 to T=50; with it the scale stays put
    assert max(norms) / min(norms) < 1.1


def test_kd_rejects_bad_settings() -> None:
    with pytest.raises(TransferkitError, match="temperature"):
        KDLoss(0.0)
    with pytest.raises(TransferkitError, match="alpha"):
        KDLoss(2.0, 1.5)


def test_ce_uses_teacher_argmax_without_labels() -> None:
    ref = F.cross_entropy(S, T.argmax(1))
    assert CrossEntropy()(out(S), out(T), None).item() == pytest.approx(ref.item(), rel=1e-6)
    assert CrossEntropy()(out(S), out(T), Y).item() == pytest.approx(F.cross_entropy(S, Y).item(), rel=1e-6)


# --------------------------------------------------------------------- FitNet
def test_fitnet_is_half_mse_through_the_regressor() -> None:
    gs = torch.linspace(-1, 1, 4 * 3).reshape(4, 3)
    ht = torch.linspace(0.5, -2, 4 * 6).reshape(4, 6)
    loss = FitNetLoss.for_shapes([gs], [ht])
    lin = loss.regressors[0][1]
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(-0.3, 0.4, 18).reshape(6, 3))
    want = 0.5 * ((gs @ lin.weight.t() - ht) ** 2).sum() / ht.numel()
    assert loss(out(S, [gs]), out(T, [ht]), None).item() == pytest.approx(want.item(), rel=1e-6)


def test_fitnet_conv_regressor_for_feature_maps() -> None:
    loss = FitNetLoss.for_shapes([torch.zeros(2, 3, 4, 4)], [torch.zeros(2, 5, 2, 2)])
    reg = loss.regressors[0]
    assert reg(torch.zeros(2, 3, 4, 4)).shape == (2, 5, 2, 2)
    assert any(isinstance(m, nn.Conv2d) for m in reg.modules())
    with pytest.raises(TransferkitError, match="fitnet cannot map"):
        FitNetLoss.for_shapes([torch.zeros(2, 3)], [torch.zeros(2, 5, 2, 2)])


# ------------------------------------------------------------------------- AT
FS = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
FT = torch.linspace(1, -0.5, 2 * 2 * 4 * 4).reshape(2, 2, 4, 4).cos()


def test_attention_transfer_matches_hand_written_maps() -> None:
    def q(a: torch.Tensor) -> torch.Tensor:
        m = (a.double() ** 2).sum(1).reshape(a.shape[0], -1) / a.shape[1]
        return m / torch.sqrt((m**2).sum(1, keepdim=True))

    want = ((q(FS) - q(FT)) ** 2).mean()
    got = AttentionTransfer()(out(S[:2], [FS]), out(T[:2], [FT]), None)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_attention_transfer_refuses_vectors() -> None:
    with pytest.raises(TransferkitError, match="convolutional"):
        AttentionTransfer()(out(S, [S]), out(T, [T]), None)


# ------------------------------------------------------------------------ RKD
def huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_distance_and_angle_match_loops_over_pairs_and_triplets() -> None:
    n = len(S)
    s, t = S.double(), T.double()

    def dist(e: torch.Tensor) -> dict[tuple[int, int], float]:
        d = {(i, j): float((e[i] - e[j]).norm()) for i, j in itertools.permutations(range(n), 2)}
        mu = sum(d.values()) / len(d)
        return {k: v / mu for k, v in d.items()}

    ds, dt = dist(s), dist(t)
    # the loss averages over the full N x N matrix, whose diagonal is 0 for both
    want_d = sum(huber(ds[k], dt[k]) for k in ds) / (n * n)

    def angle(e: torch.Tensor, i: int, j: int, k: int) -> float:
        a, b = e[i] - e[j], e[k] - e[j]
        if float(a.norm()) == 0 or float(b.norm()) == 0:
            return 0.0
        return float(a @ b / (a.norm() * b.norm()))

    want_a = sum(huber(angle(s, i, j, k), angle(t, i, j, k)) for i, j, k in itertools.product(range(n), repeat=3)) / n**3
    assert RKDLoss(1.0, 0.0)(out(S), out(T), None).item() == pytest.approx(want_d, rel=1e-4)
    assert RKDLoss(0.0, 1.0)(out(S), out(T), None).item() == pytest.approx(want_a, rel=1e-4)
    assert RKDLoss()(out(S), out(T), None).item() == pytest.approx(25 * want_d + 50 * want_a, rel=1e-4)


def test_rkd_is_invariant_to_scale_and_translation_of_the_teacher() -> None:
    a = RKDLoss()(out(S), out(T), None)
    b = RKDLoss()(out(S), out(3 * T + 1), None)
    assert a.item() == pytest.approx(b.item(), rel=1e-4)


# ------------------------------------------------------------------------ DKD
def test_dkd_matches_explicit_target_and_non_target_parts() -> None:
    temp, alpha, beta = 4.0, 1.0, 8.0
    ps, pt = softmax_by_hand(S, temp), softmax_by_hand(T, temp)
    total = 0.0
    for i in range(len(S)):
        c = int(Y[i])
        bs = torch.stack([ps[i, c], 1 - ps[i, c]])
        bt = torch.stack([pt[i, c], 1 - pt[i, c]])
        tckd = float((bt * (bt / bs).log()).sum())
        keep = [k for k in range(S.shape[1]) if k != c]
        qs = softmax_by_hand(S[i : i + 1, keep], temp)[0]
        qt = softmax_by_hand(T[i : i + 1, keep], temp)[0]
        nckd = float((qt * (qt / qs).log()).sum())
        total += alpha * tckd + beta * nckd
    want = total / len(S) * temp**2
    assert DKDLoss(alpha, beta, temp)(out(S), out(T), Y).item() == pytest.approx(want, rel=1e-4)


def test_kd_is_tckd_plus_weighted_nckd() -> None:
    """Zhao et al. eq. (5): KD = TCKD + (1 - p_t) NCKD, checked per example."""
    temp = 2.0
    for i in range(len(S)):
        s, t, y = S[i : i + 1], T[i : i + 1], Y[i : i + 1]
        kd = KDLoss(temp, 1.0)(out(s), out(t), None)
        tckd = DKDLoss(1.0, 0.0, temp)(out(s), out(t), y)
        nckd = DKDLoss(0.0, 1.0, temp)(out(s), out(t), y)
        pt = F.softmax(t / temp, 1)[0, y].item()
        assert kd.item() == pytest.approx(tckd.item() + (1 - pt) * nckd.item(), rel=1e-4)


# -------------------------------------------------------------------- goldens
GOLDEN = {
    "kd_T4_a0.9": 0.227084219455719,
    "kd_T4_soft": 0.17227518558502197,
    "kd_T20_a0.5": 0.4475562274456024,
    "dkd_a1_b8_T4": 1.1785359382629395,
    "rkd_25_50": 0.2026064693927765,
    "rkd_distance": 0.0032438451889902353,
    "rkd_angle": 0.0024302068632096052,
    "at_p2": 0.00867986399680376,
}


def test_golden_values_do_not_drift() -> None:
    s, t = out(S), out(T)
    got = {
        "kd_T4_a0.9": KDLoss(4.0, 0.9)(s, t, Y),
        "kd_T4_soft": KDLoss(4.0, 1.0)(s, t, None),
        "kd_T20_a0.5": KDLoss(20.0, 0.5)(s, t, Y),
        "dkd_a1_b8_T4": DKDLoss(1.0, 8.0, 4.0)(s, t, Y),
        "rkd_25_50": RKDLoss()(s, t, Y),
        "rkd_distance": RKDLoss(1, 0)(s, t, Y),
        "rkd_angle": RKDLoss(0, 1)(s, t, Y),
        "at_p2": AttentionTransfer()(out(S[:2], [FS]), out(T[:2], [FT]), None),
    }
    for k, v in GOLDEN.items():
        assert math.isclose(float(got[k]), v, rel_tol=1e-5), (k, float(got[k]), v)


# ------------------------------------------------------------------- registry
def test_parse_losses_names_and_weights() -> None:
    assert parse_losses(["kd=1", "fitnet=0.5", "ce"]) == {"kd": 1.0, "fitnet": 0.5, "ce": 1.0}
    with pytest.raises(TransferkitError, match="unknown distillation loss name 'kdd'; known distillation loss names: at, ce, dkd"):
        parse_losses(["kdd=1"])
    with pytest.raises(TransferkitError, match="must be a number"):
        parse_losses(["kd=x"])
    with pytest.raises(TransferkitError, match="no distillation loss"):
        parse_losses([])
