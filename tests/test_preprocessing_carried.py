"""A model carries its input preprocessing: Omniglot's inversion is applied again to a user's own PNG files."""

from __future__ import annotations

import zipfile

import numpy as np
import torch
from PIL import Image

from test_meta_omniglot import make_zip
from transferkit.cli import main
from transferkit.commands import meta as meta_cmd
from transferkit.commands.common import fit_to_model
from transferkit.data import TensorData, load_data
from transferkit.models import create_model, load_model


def test_fit_to_model_applies_the_models_inversion_once():
    x = torch.rand(4, 1, 8, 8)
    raw = TensorData(x, None, name="folder")
    loader_made = TensorData(1 - x, None, name="omniglot", preprocess={"invert": True})
    assert torch.equal(fit_to_model(raw, (1, 8, 8), True, {"invert": True}).x, 1 - x)
    assert torch.equal(fit_to_model(loader_made, (1, 8, 8), True, {"invert": True}).x, 1 - x)
    assert torch.equal(fit_to_model(raw, (1, 8, 8), True, None).x, x)


def test_preprocessing_survives_save_and_load(tmp_path):
    model = create_model("mlp", 2, (1, 8, 8))
    model.spec["preprocess"] = {"invert": True}
    model.save(tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").spec["preprocess"] == {"invert": True}


def test_few_shot_on_the_official_pngs_sees_what_meta_training_saw(tmp_path, monkeypatch, capsys):
    (tmp_path / "omniglot").mkdir()
    chars = [("Greek", f"character{i:02d}") for i in range(1, 7)]
    make_zip(tmp_path / "omniglot" / "images_background_small1.zip", "images_background_small1", chars)
    rc = main(["meta", "train", "--data", "omniglot:small1", "--data-dir", str(tmp_path), "--model", "conv4",
               "--ways", "2", "--shots", "1", "--queries", "1", "--meta-batch", "1", "--episodes-per-epoch", "1",
               "--epochs", "1", "--test-fraction", "0.4", "--test-episodes", "0", "--quiet", "--run-dir", str(tmp_path / "m")])
    assert rc == 0
    assert load_model(tmp_path / "m").spec["preprocess"] == {"invert": True}
    # the user's own folder: the same PNG files as distributed (dark strokes on white paper)
    with zipfile.ZipFile(tmp_path / "omniglot" / "images_background_small1.zip") as z:
        z.extractall(tmp_path / "raw")
    support = tmp_path / "support"
    for alphabet, char in chars[:2]:
        (support / char).mkdir(parents=True)
        Image.open(tmp_path / "raw" / "images_background_small1" / alphabet / char / "00.png").save(support / char / "00.png")
    query = tmp_path / "query"
    query.mkdir()
    Image.open(tmp_path / "raw" / "images_background_small1" / "Greek" / "character01" / "00.png").save(query / "q.png")
    seen: dict[str, torch.Tensor] = {}
    real = meta_cmd.few_shot_predict

    def spy(learner, sx, sy, qx, steps=None):
        seen["support"], seen["query"] = sx.cpu(), qx.cpu()
        return real(learner, sx, sy, qx, steps)

    monkeypatch.setattr(meta_cmd, "few_shot_predict", spy)
    assert main(["few-shot", "--model-from", str(tmp_path / "m"), "--support", str(support), "--query", str(query),
                 "--output", str(tmp_path / "p.csv"), "--quiet"]) == 0
    loader = load_data("omniglot:small1", data_dir=tmp_path)
    first = loader.x[loader.y == 0][0]  # Greek/character01, drawing 00, as meta-training saw it
    assert float((seen["support"][0] - first).abs().mean()) < 0.05  # without the inversion: about 0.9
    assert float((seen["query"][0] - first).abs().mean()) < 0.05
    assert np.isclose(float(seen["support"][0].mean()), float(first.mean()), atol=0.05)
