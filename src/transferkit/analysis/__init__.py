"""Analysis: which model to transfer (LogME, LEEP, NCE, H-score), how far apart two domains are
(proxy A-distance, MMD), t-SNE maps, figures and run reports."""

from .domain_gap import (
    ADistance,
    MMDResult,
    median_bandwidth,
    mmd2_unbiased,
    mmd_median,
    proxy_a_distance,
)
from .rank import SCORE_NAMES, SCORE_TITLES, forward_features, rank_models, transferability_scores
from .report import Run, compare_runs, comparison_markdown, read_run, run_section, write_report
from .transferability import h_score, leep, log_evidence, logme, nce
from .tsne import Embedding, tsne_embed

__all__ = [
    "SCORE_NAMES",
    "SCORE_TITLES",
    "ADistance",
    "Embedding",
    "MMDResult",
    "Run",
    "compare_runs",
    "comparison_markdown",
    "forward_features",
    "h_score",
    "leep",
    "log_evidence",
    "logme",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_median",
    "nce",
    "proxy_a_distance",
    "rank_models",
    "read_run",
    "run_section",
    "transferability_scores",
    "tsne_embed",
    "write_report",
]
