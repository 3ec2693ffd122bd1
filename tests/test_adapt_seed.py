"""adapt() from Python: the initial weights follow the run's seed, whatever the global RNG did before."""

from __future__ import annotations

import torch

from transferkit.adapt import AdaptSpec, adapt
from transferkit.data import TensorData
from transferkit.engine import TrainConfig


def _tables(seed: int) -> tuple[TensorData, TensorData]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(120, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorData(x, y, name="source"), TensorData(x + 0.5, y, name="target")


def _source_only(global_seed: int) -> dict[str, torch.Tensor]:
    source, target = _tables(0)
    torch.manual_seed(global_seed)  # whatever the caller's code did to the global generator
    result = adapt(source, target.unlabeled(), AdaptSpec(method="source-only", source_epochs=1),
                   TrainConfig(epochs=1, seed=3), model="mlp", verbose=False)
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_same_seed_same_model_whatever_the_global_generator_held() -> None:
    a, b = _source_only(1), _source_only(2)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
