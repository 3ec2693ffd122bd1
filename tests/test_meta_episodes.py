"""Episode sampler and class splits: shapes, seeding, rotations, and bad requests."""

from __future__ import annotations

import pytest
import torch

from transferkit.data import TensorData
from transferkit.errors import TransferkitError
from transferkit.meta import EpisodeSampler, class_groups, rotate_batch, split_classes


def indexed_images(classes: int = 6, per_class: int = 7) -> TensorData:
    """Each image's pixel (0, 0) holds its index; labels in blocks."""
    n = classes * per_class
    x = torch.rand(n, 1, 5, 5)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    y = torch.arange(classes).repeat_interleave(per_class)
    return TensorData(x, y, [f"alpha{i // 2}/c{i}" for i in range(classes)], "toy")


def test_shapes_labels_and_disjoint_support_query():
    data = indexed_images()
    s = EpisodeSampler(data, ways=3, shots=2, queries=4)
    ep = s.sample(5, torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (5, 6, 1, 5, 5) and ep.query_x.shape == (5, 12, 1, 5, 5)
    assert ep.support_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    for b in range(5):
        s_idx = ep.support_x[b, :, 0, 0, 0].long()
        q_idx = ep.query_x[b, :, 0, 0, 0].long()
        assert not set(s_idx.tolist()) & set(q_idx.tolist())
        assert len(set(q_idx.tolist())) == 12
        # every example belongs to the class its episode label stands for
        assert torch.equal(data.y[s_idx], ep.classes[b][ep.support_y[b]])
        assert torch.equal(data.y[q_idx], ep.classes[b][ep.query_y[b]])
        assert len(set(ep.classes[b].tolist())) == 3


def test_seeded_and_subset_of_classes():
    data = indexed_images()
    s = EpisodeSampler(data, classes=[1, 3, 5], ways=2, shots=1, queries=1)
    a = s.sample(20, torch.Generator().manual_seed(7))
    b = s.sample(20, torch.Generator().manual_seed(7))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.classes, b.classes)
    assert set(a.classes.flatten().tolist()) <= {1, 3, 5}
    c = s.sample(20, torch.Generator().manual_seed(8))
    assert not torch.equal(a.classes, c.classes)


def test_rotations_make_rotated_classes():
    data = indexed_images(classes=2, per_class=6)
    s = EpisodeSampler(data, ways=8, shots=1, queries=1, rotations=True)
    assert s.num_classes == 8
    ep = s.sample(3, torch.Generator().manual_seed(0))
    assert sorted(ep.classes[0].tolist()) == list(range(8))  # all 2 x 4 virtual classes
    for b in range(3):
        for j in range(8):
            v = int(ep.classes[b, j])
            img = ep.support_x[b, j]
            # find the source image: it is the one whose rotation by (v % 4) quarter-turns matches
            src = data.x[data.y == v // 4]
            rotated = torch.rot90(src, v % 4, dims=(-2, -1))
            assert (rotated == img).flatten(1).all(1).any()
    assert s.class_name(4 * 1 + 3) == "alpha0/c1@rot270"


def test_rotate_batch_matches_rot90():
    x = torch.rand(4, 1, 3, 3)
    r = torch.tensor([0, 1, 2, 3])
    out = rotate_batch(x, r)
    for i in range(4):
        assert torch.equal(out[i], torch.rot90(x[i], i, dims=(-2, -1)))


def test_class_too_small_names_the_class():
    data = indexed_images(per_class=7)
    with pytest.raises(TransferkitError, match=r"class 'alpha0/c0' has 7 examples but 5-shot with 3 queries needs 8"):
        EpisodeSampler(data, ways=2, shots=5, queries=3)


def test_more_ways_than_classes():
    with pytest.raises(TransferkitError, match=r"7-way episodes need 7 classes but this split of toy has 6; lower --ways"):
        EpisodeSampler(indexed_images(), ways=7, shots=1, queries=1)
    with pytest.raises(TransferkitError, match="has 3 \\(counting rotations\\)|has 12 \\(counting"):
        EpisodeSampler(indexed_images(), classes=[0, 1, 2], ways=13, shots=1, queries=1, rotations=True)


def test_split_by_group_keeps_groups_whole():
    classes = [f"a{g}/c{i}" for g in range(8) for i in range(3)]
    split = split_classes(classes, val_fraction=0.125, test_fraction=0.25, by_group=True, seed=0)
    groups = class_groups(classes)
    parts = {k: {groups[i] for i in v} for k, v in split.items()}
    assert len(parts["test"]) == 2 and len(parts["val"]) == 1 and len(parts["train"]) == 5
    assert not (parts["test"] & parts["train"]) and not (parts["val"] & parts["train"])
    assert sorted(i for v in split.values() for i in v) == list(range(len(classes)))
    assert split == split_classes(classes, 0.125, 0.25, True, seed=0)
    with pytest.raises(TransferkitError, match="cannot split 1 groups"):
        split_classes(["x/a", "x/b"], by_group=True)
