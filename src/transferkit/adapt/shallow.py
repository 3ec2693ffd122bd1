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

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone

from ..errors import TransferkitError, unknown_name
from ..ops import domain_density_ratio, effective_sample_size, sq_distances

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
    ``Xs' = Xs C_s^{-1/2} C_t^{1/2}`` with ``C = Cov + reg I``; the target is unchanged.

    Sun, Feng, Saenko. "Return of Frustratingly Easy Domain Adaptation." AAAI 2016.
    """

    def __init__(self, reg: float = 1.0):
        self.reg = reg

    def fit(self, Xs: Any, Xt: Any) -> CORAL:
        xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
        _same_width(xs, xt)
        eye = np.eye(xs.shape[1])
        cs = np.cov(xs, rowvar=False) + self.reg * eye
        ct = np.cov(xt, rowvar=False) + self.reg * eye
        self.matrix_ = np.real(linalg.fractional_matrix_power(cs, -0.5) @ linalg.fractional_matrix_power(ct, 0.5))
        return self

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


class TCA(DomainTransformer):
    """Transfer Component Analysis: find W maximising the kernel variance kept while
    shrinking the MMD between domains, the top eigenvectors of
    ``(K L K + mu I)^{-1} K H K`` with ``L_ij = 1/n_s^2, 1/n_t^2, -1/(n_s n_t)`` and
    H the centring matrix; ``X' = k(X, X_train) W``. Fitting costs O((n_s + n_t)^3):
    at most ``max_samples`` of each domain are used.

    Pan, Tsang, Kwok, Yang. "Domain Adaptation via Transfer Component Analysis."
    IEEE TNN 2011.
    """

    def __init__(self, n_components: int = 20, mu: float = 1.0, kernel: str = "rbf", gamma: float | None = None,
                 max_samples: int = 1000, seed: int = 0):
        self.n_components = n_components
        self.mu = mu
        self.kernel = kernel
        self.gamma = gamma
        self.max_samples = max_samples
        self.seed = seed

    def fit(self, Xs: Any, Xt: Any) -> TCA:
        if self.kernel not in ("rbf", "linear"):
            raise TransferkitError(f"TCA kernel must be 'rbf' or 'linear', got '{self.kernel}'")
        xs, xt = _arr(Xs, "source"), _arr(Xt, "target")
        _same_width(xs, xt)
        rng = np.random.default_rng(self.seed)
        if len(xs) > self.max_samples:
            xs = xs[rng.choice(len(xs), self.max_samples, replace=False)]
        if len(xt) > self.max_samples:
            xt = xt[rng.choice(len(xt), self.max_samples, replace=False)]
        x = np.concatenate([xs, xt])
        self.gamma_ = self.gamma if self.gamma is not None else 1.0 / (x.shape[1] * x.var() + 1e-12)
        ns, nt = len(xs), len(xt)
        n = ns + nt
        k = _kernel(x, x, self.kernel, self.gamma_)
        e = np.concatenate([np.full(ns, 1.0 / ns), np.full(nt, -1.0 / nt)])
        lmat = np.outer(e, e)
        h = np.eye(n) - 1.0 / n
        a = k @ lmat @ k + self.mu * np.eye(n)
        b = k @ h @ k
        vals, vecs = linalg.eig(np.linalg.solve(a, b))
        order = np.argsort(-vals.real)[: self.n_components]
        self.w_ = np.real(vecs[:, order])
        self.x_fit_ = x
        return self

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        return _kernel(_arr(X, "X"), self.x_fit_, self.kernel, self.gamma_) @ self.w_


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


def create_shallow(name: str, n_components: int = 20, estimator: Any = None) -> BaseEstimator:
    """A classifier ``fit(Xs, ys, Xt)`` / ``predict(Xt)`` for a shallow method name.

    ``estimator`` is an sklearn classifier or a name in :data:`CLASSIFIERS` (default: ``logreg``).
    """
    if name not in SHALLOW_METHODS:
        raise unknown_name("shallow method", name, SHALLOW_METHODS)
    if isinstance(estimator, str):
        estimator = make_classifier(estimator)
    if name.startswith("iw-"):
        return ImportanceWeightedClassifier(estimator, name[3:])
    transformers: dict[str, DomainTransformer | None] = {
        "coral": CORAL(), "sa": SubspaceAlignment(n_components), "tca": TCA(n_components),
        "pca": PCATransform(n_components), "none": _Identity(),
    }
    return AdaptedClassifier(transformers[name], estimator)


class _Identity(DomainTransformer):
    def fit(self, Xs: Any, Xt: Any) -> _Identity:
        return self

    def transform(self, X: Any, domain: str = "target") -> np.ndarray:
        _check_domain(domain)
        return _arr(X, "X")
