"""Shallow domain adaptation with scikit-learn conventions.

Transformers are fitted on source and target inputs and map each domain into
a shared space: ``fit(Xs, Xt)``, ``transform(X, domain="source"|"target")``.
:class:`AdaptedClassifier` chains one with any sklearn classifier:
``AdaptedClassifier(CORAL(), LogisticRegression()).fit(Xs, ys, Xt).predict(Xt)``.
Importance weighting (:class:`ImportanceWeightedClassifier`) re-weights
source samples by an estimated density ratio p_t(x)/p_s(x) and passes it as
``sample_weight`` to any classifier that accepts it.
They run on raw feature tables or on features of a trained network.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone

from ..errors import TransferkitError, unknown_name
from ..ops import domain_density_ratio, effective_sample_size, sq_distances
from ..options import check, option

DOMAINS = ("source", "target")


def _arr(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(len(a), -1)
    if not np.all(np.isfinite(a)):
        raise TransferkitError(f"{name} contains NaN or infinite values")
    return a


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise TransferkitError(f"domain must be 'source' or 'target', got '{domain}'")


def _same_width(xs: np.ndarray, xt: np.ndarray) -> None:
    if xs.shape[1] != xt.shape[1]:
        raise TransferkitError(f"source has {xs.shape[1]} features but target has {xt.shape[1]}; they must match")


class DomainTransformer(BaseEstimator, TransformerMixin):
    """Base of the shallow transformers: ``fit(Xs, Xt)``, ``transform(X, domain)``."""

    def fit(self, Xs: Any, Xt: Any) -> DomainTransformer:
        raise NotImplementedError

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, Xs: Any, Xt: Any = None, **_: Any) -> tuple[np.ndarray, np.ndarray]:
        if Xt is None:
            raise TransferkitError("fit_transform needs both source and target inputs: fit_transform(Xs, Xt)")
        self.fit(Xs, Xt)
        return self.transform(Xs, "source"), self.transform(Xt, "target")


class CORAL(DomainTransformer):
    """CORrelation ALignment: re-colour the source with the target covariance,
    ``Xs' = Xs C_s^{-1/2} C_t^{1/2}`` with ``C = Cov + reg (tr(Cov)/d) I``; the target is unchanged.

    The paper adds ``I`` (``reg = 1``) to covariances of z-scored features, whose mean variance
    ``tr(Cov)/d`` is 1. Here the regulariser is relative to each domain's mean variance, so
    ``reg = 1`` is the paper's setting on standardised features and keeps the same strength on
    features with small variance (binary bag-of-words, unit-norm embeddings), where an absolute
    ``I`` would swamp the covariances and make CORAL a no-op. ``C + s I`` with ``s = reg tr(C)/d``
    is, up to a factor that cancels in ``C_s^{-1/2} C_t^{1/2}``, the shrunk covariance
    ``(1 - a) C + a (tr(C)/d) I`` with ``a = reg / (1 + reg)`` (skada's ``CORALAdapter(reg=a)``,
    which also centres both domains).

    Sun, Feng, Saenko. "Return of Frustratingly Easy Domain Adaptation." AAAI 2016.
    """

    def __init__(self, reg: float = 1.0):
        self.reg = reg

    def fit(self, Xs: Any, Xt: Any) -> CORAL:
        if not (np.isfinite(self.reg) and self.reg >= 0):
            raise TransferkitError(f"CORAL reg must be a number >= 0, got {self.reg!r}")
        xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
        _same_width(xs, xt)
        cs, ct = self._regularised(xs), self._regularised(xt)
        self.matrix_ = np.real(linalg.fractional_matrix_power(cs, -0.5) @ linalg.fractional_matrix_power(ct, 0.5))
        return self

    def _regularised(self, x: np.ndarray) -> np.ndarray:
        """``Cov(x) + reg (tr(Cov)/d) I`` (the identity's scale 1 when every column is constant)."""
        d = x.shape[1]
        cov = np.atleast_2d(np.cov(x, rowvar=False)) if len(x) > 1 else np.zeros((d, d))
        scale = float(np.trace(cov)) / d
        if scale <= 0:
            scale = 1.0
        return cov + self.reg * scale * np.eye(d)

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        x = _arr(X, "X")
        return x @ self.matrix_ if domain == "source" else x


def _pca_basis(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:k].T


class SubspaceAlignment(DomainTransformer):
    """Subspace alignment: with d-dim PCA bases P_s, P_t, map source by
    ``(Xs - mu_s) P_s M`` with ``M = P_s^T P_t`` and target by ``(Xt - mu_t) P_t``.

    The paper picks d from a stability bound per dataset; here d is ``n_components`` (20 by
    default, at most the width and the number of rows). The map equals skada's
    ``SubspaceAlignmentAdapter`` up to the sign of each PCA axis (``tests/test_shallow_reference.py``).

    Fernando, Habrard, Sebban, Tuytelaars. "Unsupervised Visual Domain
    Adaptation Using Subspace Alignment." ICCV 2013.
    """

    def __init__(self, n_components: int = 20):
        self.n_components = n_components

    def fit(self, Xs: Any, Xt: Any) -> SubspaceAlignment:
        xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
        _same_width(xs, xt)
        k = min(self.n_components, xs.shape[1], len(xs), len(xt))
        self.mean_s_, self.ps_ = _pca_basis(xs, k)
        self.mean_t_, self.pt_ = _pca_basis(xt, k)
        self.m_ = self.ps_.T @ self.pt_
        return self

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        x = _arr(X, "X")
        if domain == "source":
            return (x - self.mean_s_) @ self.ps_ @ self.m_
        return (x - self.mean_t_) @ self.pt_


class PCATransform(DomainTransformer):
    """A fixed transformation shared by both domains: PCA fitted on the union of
    source and target, ``X' = (X - mu) P``. A simple baseline for the learned maps."""

    def __init__(self, n_components: int = 20):
        self.n_components = n_components

    def fit(self, Xs: Any, Xt: Any) -> PCATransform:
        xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
        _same_width(xs, xt)
        x = np.concatenate([xs, xt])
        self.mean_, self.p_ = _pca_basis(x, min(self.n_components, x.shape[1], len(x)))
        return self

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        return (_arr(X, "X") - self.mean_) @ self.p_


def _kernel(a: np.ndarray, b: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    """Linear ``a b^T`` or RBF ``exp(-gamma ||a_i - b_j||^2)`` Gram matrix."""
    if kernel == "linear":
        return a @ b.T
    return np.exp(-gamma * sq_distances(a, b))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _unit_columns(w: np.ndarray) -> np.ndarray:
    return w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-300)


TCA_KERNELS = ("linear", "rbf")


class TCA(DomainTransformer):
    """Transfer Component Analysis: with the kernel matrix K of the n = n_s + n_t fitting rows,
    ``L = e e^T`` (``e_i = 1/n_s`` on source rows, ``-1/n_t`` on target rows) and the centring
    matrix ``H = I - 11^T/n``, the transfer components W (n x k) are the top k eigenvectors of

    ``(K L K + mu I)^{-1} K H K``

    (the variance kept, ``tr(W^T K H K W)``, against the MMD between domains in the embedding,
    ``tr(W^T K L K W)``, plus ``mu tr(W^T W)``), each scaled to unit norm; ``X' = k(X, X_fit) W``.

    Defaults are the papers' setting as in the TCA/JDA code: linear kernel, k = 100 (at most the
    rank of K: the width d for the linear kernel), mu = 1, rows scaled to unit L2 norm first
    (``l2_normalize``, applied in ``transform`` too). L is the paper's; that code divides it by
    its Frobenius norm ``1/n_s + 1/n_t``, so its ``mu`` is ours divided by ``1/n_s + 1/n_t``
    (pass ``mu=1/n_s + 1/n_t`` to reproduce the code's ``mu = 1`` exactly).

    Cost. For the linear kernel the same eigenvectors come exactly from a d x d problem: the
    non-zero ones lie in the column space of X, ``W = X G^{-1/2} c`` with ``G = X^T X`` and
    ``(G^{1/2} X^T L X G^{1/2} + mu I) c lambda = G^{1/2} X^T H X G^{1/2} c``, so
    ``X' = X G^{1/2} c``; fitting is O(n d^2 + d^3) on every row. The RBF kernel solves the
    n x n problem, O(n^3) time and about 5 n^2 doubles of memory: ``max_samples`` caps the rows
    of each domain (a random subset, announced with a warning); by default every row is used.

    Pan, Tsang, Kwok, Yang. "Domain Adaptation via Transfer Component Analysis."
    IEEE TNN 2011. Long, Wang, Ding, Sun, Yu. "Transfer Feature Learning with Joint
    Distribution Adaptation." ICCV 2013 (the code whose TCA settings are the defaults).
    """

    def __init__(self, n_components: int = 100, mu: float = 1.0, kernel: str = "linear", gamma: float | None = None,
                 l2_normalize: bool = True, max_samples: int | None = None, seed: int = 0):
        self.n_components = n_components
        self.mu = mu
        self.kernel = kernel
        self.gamma = gamma
        self.l2_normalize = l2_normalize
        self.max_samples = max_samples
        self.seed = seed

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        return _unit_rows(x) if self.l2_normalize else x

    def fit(self, Xs: Any, Xt: Any) -> TCA:
        if self.kernel not in TCA_KERNELS:
            raise TransferkitError(f"TCA kernel must be 'linear' or 'rbf', got '{self.kernel}'")
        if not (np.isfinite(self.mu) and self.mu > 0):
            raise TransferkitError(f"TCA mu must be a number > 0, got {self.mu!r}")
        if self.max_samples is not None and self.max_samples < 1:
            raise TransferkitError(f"TCA max_samples must be a whole number >= 1 (or None for every row), got {self.max_samples!r}")
        xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
        _same_width(xs, xt)
        xs, xt = self._subsample(xs, "source"), self._subsample(xt, "target")
        xs, xt = self._inputs(xs), self._inputs(xt)
        ns, nt = len(xs), len(xt)
        x = np.concatenate([xs, xt])
        e = np.concatenate([np.full(ns, 1.0 / ns), np.full(nt, -1.0 / nt)])
        if self.kernel == "linear":
            self.projection_ = self._fit_linear(x, e)
            self.n_fit_ = len(x)
            return self
        self.gamma_ = self.gamma if self.gamma is not None else 1.0 / (x.shape[1] * x.var() + 1e-12)
        n = len(x)
        k = _kernel(x, x, self.kernel, self.gamma_)
        ke = k @ e
        a = np.outer(ke, ke) + self.mu * np.eye(n)  # K L K + mu I
        kc = k - k.mean(0, keepdims=True)
        b = kc.T @ kc  # K H K (H is idempotent and symmetric)
        top = min(self.n_components, n)
        _, vecs = linalg.eigh(b, a, subset_by_index=[n - top, n - 1])
        self.w_ = _unit_columns(vecs[:, ::-1])
        self.x_fit_ = x
        self.n_fit_ = n
        return self

    def _fit_linear(self, x: np.ndarray, e: np.ndarray) -> np.ndarray:
        """The d x k map ``G^{1/2} c`` of the linear-kernel TCA (see the class docstring)."""
        s, u = np.linalg.eigh(x.T @ x)
        keep = s > max(float(s.max()), 0.0) * 1e-10
        root = u[:, keep] * np.sqrt(s[keep])  # G^{1/2} on the range of G, in its eigenbasis
        m = root.T @ (x.T @ e)  # G^{1/2} X^T e
        xc = x - x.mean(0, keepdims=True)
        sh = root.T @ (xc.T @ xc) @ root  # G^{1/2} X^T H X G^{1/2}
        r = root.shape[1]
        top = min(self.n_components, r)
        _, c = linalg.eigh(sh, np.outer(m, m) + self.mu * np.eye(r), subset_by_index=[r - top, r - 1])
        return root @ _unit_columns(c[:, ::-1])

    def _subsample(self, x: np.ndarray, domain: str) -> np.ndarray:
        if self.max_samples is None or len(x) <= self.max_samples:
            return x
        warnings.warn(f"TCA fits on {self.max_samples} random {domain} rows of {len(x)} (max_samples={self.max_samples}); "
                      "set max_samples=None to use every row", UserWarning, stacklevel=3)
        rng = np.random.default_rng(self.seed + (domain == "target"))
        return x[np.sort(rng.choice(len(x), self.max_samples, replace=False))]

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        x = self._inputs(_arr(X, "X"))
        if self.kernel == "linear":
            return x @ self.projection_
        return _kernel(x, self.x_fit_, self.kernel, self.gamma_) @ self.w_


# ------------------------------------------------------------ importance weights
def domain_classifier_weights(Xs: Any, Xt: Any, C: float = 1.0, clip: float = 20.0, folds: int = 1) -> np.ndarray:
    """w(x) = p_t(x)/p_s(x) = (n_s/n_t) P(t|x) / P(s|x) from a logistic domain classifier
    (:func:`transferkit.ops.domain_density_ratio`), normalised to mean 1, clipped to [0, clip]
    and normalised again (Bickel, Brueckner, Scheffer, ICML 2007).

    Clipping after normalising caps each weight relative to the mean; clipping the raw ratios
    (as before) let the weights collapse on the few rows that reached the clip.
    ``folds > 1`` cross-fits the domain classifier (each row's ratio from a classifier that did
    not see it). It is off by default: on same-distribution data with more features than rows
    the held-out predictions of an over-fitted classifier were noisier than the in-sample ones
    (effective sample size 20% against 81% of the rows). :func:`transferkit.ops.effective_sample_size`
    says how many source rows the weights amount to (``ImportanceWeightedClassifier`` keeps it).
    """
    xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
    _same_width(xs, xt)
    folds = max(1, min(folds, len(xs), len(xt)))
    w = domain_density_ratio(xs, xt, C, max_iter=500, folds=folds)
    w = np.clip(w / w.mean(), 0, clip)
    return w / w.mean()


def kmm_weights(Xs: Any, Xt: Any, gamma: float | None = None, B: float = 1000.0, eps: float | None = None,
                max_iter: int = 500) -> np.ndarray:
    """Kernel mean matching: ``min_b 1/2 b^T K b - kappa^T b`` subject to
    ``0 <= b_i <= B`` and ``|sum b_i - n_s| <= n_s eps`` with ``K = k(Xs, Xs)``,
    ``kappa_i = (n_s/n_t) sum_j k(xs_i, xt_j)``; solved by L-BFGS-B with the sum
    constraint as a quadratic penalty.

    Huang, Smola, Gretton, Borgwardt, Schoelkopf. "Correcting Sample Selection
    Bias by Unlabeled Data." NeurIPS 2006.
    """
    from scipy.optimize import minimize

    xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
    _same_width(xs, xt)
    ns, nt = len(xs), len(xt)
    g = gamma if gamma is not None else 1.0 / (xs.shape[1] * np.concatenate([xs, xt]).var() + 1e-12)
    k = _kernel(xs, xs, "rbf", g)
    kappa = _kernel(xs, xt, "rbf", g).sum(1) * ns / nt
    eps = eps if eps is not None else (np.sqrt(ns) - 1) / np.sqrt(ns)
    pen = 10.0 * ns

    def f(b: np.ndarray) -> tuple[float, np.ndarray]:
        kb = k @ b
        excess = max(0.0, abs(b.sum() - ns) - ns * eps)
        sign = np.sign(b.sum() - ns)
        val = 0.5 * b @ kb - kappa @ b + pen * excess**2
        grad = kb - kappa + 2 * pen * excess * sign
        return float(val), grad

    res = minimize(f, np.ones(ns), jac=True, method="L-BFGS-B", bounds=[(0, B)] * ns, options={"maxiter": max_iter})
    w = np.maximum(res.x, 0)
    return w / max(w.mean(), 1e-12)


WEIGHTINGS: dict[str, Callable[..., np.ndarray]] = {"domain": domain_classifier_weights, "kmm": kmm_weights}


class ImportanceWeightedClassifier(BaseEstimator, ClassifierMixin):
    """Fit ``estimator`` on the source with ``sample_weight = w(x) ~ p_t(x)/p_s(x)``.

    ``weighting``: ``domain`` (logistic domain-classifier density ratio) or ``kmm``.
    ``fit(Xs, ys, Xt)``; ``predict(X)``. ``estimator.fit`` must take ``sample_weight``.
    """

    def __init__(self, estimator: Any = None, weighting: str = "domain"):
        self.estimator = estimator
        self.weighting = weighting

    def fit(self, Xs: Any, ys: Any, Xt: Any) -> ImportanceWeightedClassifier:
        if self.weighting not in WEIGHTINGS:
            raise unknown_name("weighting", self.weighting, WEIGHTINGS)
        from sklearn.linear_model import LogisticRegression
        from sklearn.utils.validation import has_fit_parameter

        if self.estimator is not None and not has_fit_parameter(self.estimator, "sample_weight"):
            raise TransferkitError(
                f"importance weighting passes sample_weight to the classifier, but {type(self.estimator).__name__}.fit "
                "does not accept sample_weight; use a classifier that does, e.g. LogisticRegression or SVC"
            )
        self.weights_ = WEIGHTINGS[self.weighting](Xs, Xt)
        self.effective_sample_size_ = effective_sample_size(self.weights_)
        self.estimator_ = clone(self.estimator) if self.estimator is not None else LogisticRegression(max_iter=1000)
        self.estimator_.fit(_arr(Xs, "source"), np.asarray(ys), sample_weight=self.weights_)
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(_arr(X, "X"))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(_arr(X, "X"))


class AdaptedClassifier(BaseEstimator, ClassifierMixin):
    """A domain transformer followed by any sklearn classifier trained on the mapped source.

    ``AdaptedClassifier(SubspaceAlignment(20), SVC()).fit(Xs, ys, Xt).predict(Xt)``
    (``predict`` maps its input as target data).
    """

    def __init__(self, transformer: DomainTransformer | None = None, estimator: Any = None):
        self.transformer = transformer
        self.estimator = estimator

    def fit(self, Xs: Any, ys: Any, Xt: Any) -> AdaptedClassifier:
        from sklearn.linear_model import LogisticRegression

        self.transformer_ = clone(self.transformer) if self.transformer is not None else CORAL()
        self.transformer_.fit(Xs, Xt)
        self.estimator_ = clone(self.estimator) if self.estimator is not None else LogisticRegression(max_iter=1000)
        self.estimator_.fit(self.transformer_.transform(Xs, "source"), np.asarray(ys))
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any, domain: str = "target") -> np.ndarray:
        return self.estimator_.predict(self.transformer_.transform(X, domain))

    def predict_proba(self, X: Any, domain: str = "target") -> np.ndarray:
        return self.estimator_.predict_proba(self.transformer_.transform(X, domain))


SHALLOW_METHODS: dict[str, str] = {
    "coral": "CORAL re-colouring of source features (Sun et al. 2016)",
    "sa": "subspace alignment of PCA bases (Fernando et al. 2013)",
    "tca": "transfer component analysis (Pan et al. 2011)",
    "pca": "fixed PCA fitted on source + target",
    "iw-domain": "importance weighting by a domain-classifier density ratio",
    "iw-kmm": "importance weighting by kernel mean matching (Huang et al. 2006)",
    "none": "the classifier on unchanged features (shallow source-only baseline)",
}


CLASSIFIERS: dict[str, str] = {
    "logreg": "multinomial logistic regression (max_iter 1000)",
    "1nn": "1-nearest neighbour, as in the TCA and subspace-alignment papers",
    "linear-svm": "linear support-vector machine, as in the CORAL paper",
}


def make_classifier(name: str) -> BaseEstimator:
    """The sklearn classifier a shallow method fits on the aligned source features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    if name not in CLASSIFIERS:
        raise unknown_name("shallow classifier", name, CLASSIFIERS)
    if name == "1nn":
        return KNeighborsClassifier(n_neighbors=1)
    if name == "linear-svm":
        return LinearSVC(C=1.0, max_iter=5000)
    return LogisticRegression(max_iter=1000)


@dataclass
class ShallowConfig:
    """Options of the shallow methods: Python keywords of :func:`create_shallow`, command-line
    options of ``transferkit adapt`` and YAML keys, from this one declaration."""

    n_components: int | None = option(None, "Shallow: width of the aligned subspace (default 20 for sa and pca, "
                                      "100 for tca as in the TCA/JDA code).", min=1)
    coral_reg: float = option(1.0, "CORAL: covariance regulariser relative to the mean feature variance, "
                              "C + reg tr(C)/d I (1 = the paper's I on z-scored features).", min=0, min_open=True)
    tca_kernel: str = option("linear", "TCA kernel.", choices={"linear": "exact on every row (a d x d problem)",
                                                               "rbf": "an n x n problem, O(n^3) time"})
    tca_mu: float = option(1.0, "TCA: weight of the ||W||^2 regulariser against the MMD term.", min=0, min_open=True)
    tca_gamma: float | None = option(None, "TCA rbf kernel width in exp(-gamma ||a - b||^2) (default 1 / (d var X)).",
                                     min=0, min_open=True)
    tca_l2_normalize: bool = option(True, "TCA: scale each row to unit L2 norm first, as in the TCA/JDA code; "
                                    "--tca-raw-inputs keeps the rows as they are.", flag="--tca-raw-inputs")
    tca_max_samples: int | None = option(None, "TCA: fit on at most this many random rows of each domain "
                                         "(announced with a warning; default: every row).", min=1)


def shallow_config(**options: Any) -> ShallowConfig:
    """A checked :class:`ShallowConfig`; an unknown option is refused with the known ones."""
    from dataclasses import fields as dc_fields

    known = [f.name for f in dc_fields(ShallowConfig)]
    for key in options:
        if key not in known:
            raise TransferkitError(f"unknown shallow option '{key}'; known: {', '.join(known)}")
    return check(ShallowConfig(**options), "shallow option ")


def create_shallow(name: str, n_components: int | None = None, estimator: Any = None, **options: Any) -> BaseEstimator:
    """A classifier ``fit(Xs, ys, Xt)`` / ``predict(Xt)`` for a shallow method name.

    ``estimator`` is an sklearn classifier or a name in :data:`CLASSIFIERS` (default: ``logreg``);
    ``options`` are :class:`ShallowConfig` fields (``coral_reg=0.5``, ``tca_kernel="rbf"``, ...).
    """
    if name not in SHALLOW_METHODS:
        raise unknown_name("shallow method", name, SHALLOW_METHODS)
    cfg = shallow_config(n_components=n_components, **options)
    if isinstance(estimator, str):
        estimator = make_classifier(estimator)
    if name.startswith("iw-"):
        return ImportanceWeightedClassifier(estimator, name[3:])
    width = cfg.n_components
    transformers: dict[str, DomainTransformer | None] = {
        "coral": CORAL(cfg.coral_reg),
        "sa": SubspaceAlignment(width or 20),
        "tca": TCA(width or 100, cfg.tca_mu, cfg.tca_kernel, cfg.tca_gamma, cfg.tca_l2_normalize, cfg.tca_max_samples),
        "pca": PCATransform(width or 20),
        "none": _Identity(),
    }
    return AdaptedClassifier(transformers[name], estimator)


class _Identity(DomainTransformer):
    def fit(self, Xs: Any, Xt: Any) -> _Identity:
        return self

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        return _arr(X, "X")
