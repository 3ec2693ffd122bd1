"""Helpers of the text tests (no tests here): a tiny random BERT and tokenizer saved to a folder, a small corpus."""

from __future__ import annotations

import csv
from pathlib import Path

WORDS = ["good", "great", "fine", "love", "excellent", "happy", "works", "well", "bad", "awful", "poor", "hate", "broken", "terrible", "sad", "fails", "the", "a", "it", "is", "this", "book", "film", "phone", "pan", "was", "not", "very", "and", "but"]
POSITIVE = ["good", "great", "love", "excellent", "happy", "works well"]
NEGATIVE = ["bad", "awful", "hate", "terrible", "broken", "fails"]


def make_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-d BERT with random weights and a word-level vocabulary, saved by save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,!"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(folder))
    return folder


def corpus(n: int, seed: int = 0, domain: str = "book") -> tuple[list[str], list[str]]:
    """``n`` short made-up sentences with a sentiment word each, and their labels."""
    import random

    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        filler = " ".join(rng.choice(["the", "it", "is", "very", "and", "was"]) for _ in range(rng.randint(1, 6)))
        texts.append(f"this {domain} {filler} {word}")
        labels.append("pos" if positive else "neg")
    return texts, labels


def write_csv(path: Path, texts: list[str], labels: list[str] | None, text_column: str = "text", label_column: str = "label") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([text_column, label_column] if labels is not None else [text_column])
        for i, t in enumerate(texts):
            w.writerow([t, labels[i]] if labels is not None else [t])
    return path
