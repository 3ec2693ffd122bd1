"""Text sources: labelled texts become a tensor of token ids, so every family works on them unchanged.

A text source is read once and tokenised once, batched, with the tokenizer of the model that
will read it (``minilm`` or ``hf:PATH``, see :mod:`transferkit.models.text`), into an int64
tensor (N, L) with L = ``max_length``: ``tokenizer id + 1``, and 0 for padding (the backbones
trim each batch to its longest row, so the fixed width costs nothing). Texts longer than L
tokens are cut (keeping the final special token), and that is said once:
``truncated 312 of 2,000 texts to 128 tokens``. ``TensorData.preprocess`` records
``{"tokenizer", "max_length"}``; a model saves the same, and data tokenised otherwise is
refused (:func:`check_text_preprocess`).

Sources (:func:`load_text`):

- ``.csv`` / ``.tsv`` with a text column (``--text-column``, default ``text``) and an optional
  label column (``--label-column``, default ``label``); string labels become class names;
- ``.jsonl``: one JSON object a line with the same two keys;
- ``.txt``: one text a line, no labels (what ``predict`` reads);
- a folder ``<class>/*.txt``: one text a file;
- ``amazon:DOMAIN``: the multi-domain sentiment reviews of Blitzer et al. (2007),
  ``amazon-reviews/raw_text/DOMAIN/{positive,negative}.review`` under the data folder
  (``--data-dir``, ``$TRANSFERKIT_DATA_DIR``), or a folder holding those two files.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import TransferkitError
from .tensors import TensorData

DEFAULT_MAX_LENGTH = 128
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".txt")
AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")
AMAZON_FILES = {"negative": "negative.review", "positive": "positive.review"}


@dataclass
class TextOptions:
    """How to read and tokenise a text source."""

    tokenizer: str = "minilm"
    max_length: int = DEFAULT_MAX_LENGTH
    text_column: str | None = None
    label_column: str | None = None
    quiet: bool = False

    @property
    def preprocess(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "max_length": self.max_length}


# ------------------------------------------------------------------ detection
def is_text_spec(spec: str, text_column: str | None = None) -> bool:
    """Whether a data spec names a text source (see the module docstring)."""
    if spec.startswith("amazon:"):
        return True
    path = Path(spec)
    if path.is_file():
        if path.suffix in (".tsv", ".jsonl", ".txt"):
            return True
        return path.suffix == ".csv" and (text_column is not None or _csv_has_column(path, "text"))
    if path.is_dir():
        if all((path / f).is_file() for f in AMAZON_FILES.values()):
            return True
        subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
        return bool(subdirs) and any(f.suffix == ".txt" for d in subdirs for f in d.iterdir())
    return False


def _csv_has_column(path: Path, name: str) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return name in header


# -------------------------------------------------------------------- readers
def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise TransferkitError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}; Latin-1 or Windows-1252?); "
            "save it as UTF-8 (iconv -f latin1 -t utf-8)"
        ) from None
    except OSError as exc:
        raise TransferkitError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_table(path: Path, text_column: str | None, label_column: str | None) -> tuple[list[str], list[str] | None, list[int]]:
    """Texts, labels (or None) and line numbers of a .csv or .tsv file with a header."""
    content = _read_utf8(path)
    delimiter = "\t" if path.suffix == ".tsv" else ","
    reader = csv.reader(content.splitlines(), delimiter=delimiter)
    try:
        rows = [(reader.line_num, r) for r in reader if r]
    except csv.Error as exc:
        raise TransferkitError(f"{path} line {reader.line_num}: not a valid {path.suffix[1:].upper()} row ({exc}); fix or remove that line") from None
    if not rows:
        raise TransferkitError(f"{path} is empty; expected a header and one row per text")
    header = rows[0][1]
    tc = text_column or "text"
    if tc not in header:
        raise TransferkitError(f"{path} has no text column '{tc}' (columns: {', '.join(header)}); name it with --text-column")
    lc = label_column or ("label" if "label" in header else None)
    if lc is not None and lc not in header:
        raise TransferkitError(f"{path} has no label column '{lc}' (columns: {', '.join(header)}); name it with --label-column")
    ti, li = header.index(tc), (header.index(lc) if lc else None)
    body = rows[1:]
    short = [n for n, r in body if len(r) <= max(ti, li or 0)]
    if short:
        raise TransferkitError(f"{path} line {short[0]} has fewer fields than the header ({len(short)} such rows); "
                               "quote texts that hold the delimiter")
    texts = [r[ti] for _, r in body]
    labels = [r[li] for _, r in body] if li is not None else None
    return texts, labels, [n for n, _ in body]


def read_jsonl(path: Path, text_column: str | None, label_column: str | None) -> tuple[list[str], list[str] | None, list[int]]:
    """Texts, labels and line numbers of a JSON Lines file (one object a line)."""
    tc, lc = text_column or "text", label_column or "label"
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    for n, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TransferkitError(f"{path} line {n} is not JSON ({exc.msg}); each line must be one object like "
                                   '{"text": "...", "label": "..."}') from None
        if not isinstance(obj, dict) or tc not in obj:
            keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
            raise TransferkitError(f"{path} line {n} has no key '{tc}' (found: {keys}); name the text key with --text-column")
        texts.append(str(obj[tc]) if obj[tc] is not None else "")
        if lc in obj:
            labels.append(str(obj[lc]))
        elif labels:
            raise TransferkitError(f"{path} line {n} has no label '{lc}' but earlier lines do; label every line or none")
        lines.append(n)
    if labels and len(labels) != len(texts):
        raise TransferkitError(f"{path}: {len(texts) - len(labels)} lines have no label '{lc}'; label every line or none")
    return texts, (labels or None), lines


def read_lines(path: Path) -> tuple[list[str], None, list[int]]:
    """A .txt file: one text a line (blank lines skipped)."""
    pairs = [(n, line) for n, line in enumerate(_read_utf8(path).splitlines(), 1) if line.strip()]
    return [t for _, t in pairs], None, [n for n, _ in pairs]


def read_text_folder(root: Path) -> tuple[list[str], list[str], list[str]]:
    """``root/<class>/*.txt``: texts, their class names and their file names."""
    texts, labels, files = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.glob("*.txt")):
            texts.append(_read_utf8(f))
            labels.append(d.name)
            files.append(str(f.relative_to(root)))
    if not texts:
        raise TransferkitError(f"{root} has no .txt files in class folders; expected {root}/<class>/<text>.txt")
    return texts, labels, files


_REVIEW = re.compile(r"<review>(.*?)(?:</review>|(?=<review>)|\Z)", re.S)


def _field(block: str, tag: str) -> str:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", block, re.S)
    return html.unescape(" ".join(m.group(1).split())) if m else ""


def read_amazon_reviews(path: Path) -> list[tuple[str, str]]:
    """(title, review text) of each ``<review>`` of a pseudo-XML ``.review`` file, read leniently.

    Not strict XML: unescaped ``&`` and ``<``, missing closing tags and stray bytes are common, so
    each review is cut out with a pattern and a broken one loses only its own fields; bytes that are
    not UTF-8 are replaced.
    """
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise TransferkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [(_field(b, "title"), _field(b, "review_text")) for b in _REVIEW.findall(raw)]


def amazon_folder(spec: str, data_dir: str | Path | None) -> Path:
    """The folder of an ``amazon:DOMAIN`` spec, looked up in the data folders."""
    domain = spec.partition(":")[2]
    if not domain or "/" in domain:
        raise TransferkitError(f"'{spec}': name a review domain, e.g. amazon:books ({', '.join(AMAZON_DOMAINS)})")
    roots = [Path(d) for d in (data_dir, os.environ.get("TRANSFERKIT_DATA_DIR")) if d]
    tried = []
    for root in roots:
        for sub in ("amazon-reviews/raw_text", "amazon-reviews", "amazon"):
            folder = root / sub / domain
            tried.append(str(folder))
            if all((folder / f).is_file() for f in AMAZON_FILES.values()):
                return folder
    where = "; looked in " + ", ".join(tried) if tried else "; no data folder is set"
    raise TransferkitError(
        f"reviews of '{domain}' not found{where}: put positive.review and negative.review in "
        f"DATA/amazon-reviews/raw_text/{domain}/ and pass --data-dir DATA (or set TRANSFERKIT_DATA_DIR)"
    )


def read_amazon(folder: Path) -> tuple[list[str], list[str]]:
    """Texts (title, then review) and labels (negative/positive) of a domain folder."""
    texts, labels, skipped = [], [], 0
    for label, fname in AMAZON_FILES.items():
        for title, body in read_amazon_reviews(folder / fname):
            text = f"{title}. {body}" if title and body else title or body
            if not text.strip():
                skipped += 1  # a review whose fields could not be read at all
                continue
            texts.append(text)
            labels.append(label)
    if skipped:
        print(f"note: {folder}: skipped {skipped} review(s) with neither a readable title nor text", file=sys.stderr)
    return texts, labels


# ----------------------------------------------------------------- tokenising
def tokenize(texts: Sequence[str], tokenizer: Any, max_length: int) -> tuple[Tensor, int]:
    """Token ids (N, ``max_length``) as ``id + 1`` with 0 for padding, and how many texts were cut.

    One batched call of the (fast) tokenizer over all texts; a text longer than ``max_length``
    tokens keeps its first ``max_length - 1`` and its final special token ([SEP]).
    """
    if max_length < 2:
        raise TransferkitError(f"--max-length must be at least 2 (a text and its special tokens), got {max_length}")
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    ids = np.zeros((len(encoded), max_length), dtype=np.int64)
    cut = 0
    for i, seq in enumerate(encoded):
        if len(seq) > max_length:
            seq = [*seq[: max_length - 1], seq[-1]]
            cut += 1
        ids[i, : len(seq)] = np.asarray(seq, dtype=np.int64) + 1
    return torch.from_numpy(ids), cut


def text_labels(labels: Sequence[str], name: str, where: Sequence[str]) -> tuple[Tensor, list[str]]:
    """Class indices and names of string labels (sorted; numerically when all are integers)."""
    empty = [i for i, v in enumerate(labels) if not str(v).strip()]
    if empty:
        raise TransferkitError(f"{name}: {len(empty)} text(s) have no label ({where[empty[0]]} first); fill in the label or drop them")
    values = [str(v).strip() for v in labels]
    distinct = set(values)
    as_int = all(re.fullmatch(r"-?\d+", v) for v in distinct)
    classes = sorted(distinct, key=(lambda v: int(v)) if as_int else None)
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[v] for v in values], dtype=torch.int64), classes


def load_text(spec: str, options: TextOptions, data_dir: str | Path | None = None) -> TensorData:
    """Read a text source (module docstring), tokenise it once, and return it as token ids."""
    from ..models.text import load_tokenizer

    if spec.startswith("amazon:"):
        folder = amazon_folder(spec, data_dir)
        texts, labels = read_amazon(folder)
        where = [f"review {i + 1}" for i in range(len(texts))]
        name = spec
    else:
        path = Path(spec)
        name = path.stem if path.is_file() else path.name
        if path.is_dir():
            if all((path / f).is_file() for f in AMAZON_FILES.values()):
                texts, labels = read_amazon(path)
                where = [f"review {i + 1}" for i in range(len(texts))]
            else:
                texts, labels, where = read_text_folder(path)
        else:
            reader = {".csv": read_table, ".tsv": read_table, ".jsonl": read_jsonl}.get(path.suffix)
            if reader is not None:
                texts, maybe, lines = reader(path, options.text_column, options.label_column)
            elif path.suffix == ".txt":
                if options.label_column:
                    raise TransferkitError(f"{path} is plain text (one text a line) and has no labels; drop --label-column")
                texts, maybe, lines = read_lines(path)
            else:
                raise TransferkitError(f"{spec}: unsupported text file '{path.suffix}'; use .csv, .tsv, .jsonl or .txt")
            labels = maybe  # type: ignore[assignment]
            where = [f"line {n}" for n in lines]
    if not texts:
        raise TransferkitError(f"{name} has no texts")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise TransferkitError(f"{name}: {len(empty)} empty text(s) ({where[empty[0]]} first); fill them in or drop those rows")
    tokenizer = load_tokenizer(options.tokenizer)
    ids, cut = tokenize(texts, tokenizer, options.max_length)
    if cut and not options.quiet:
        print(f"note: {name}: truncated {cut:,} of {len(texts):,} texts to {options.max_length} tokens (--max-length)", file=sys.stderr)
    y, classes = text_labels(labels, name, where) if labels is not None else (None, [])
    return TensorData(ids, y, classes, name, preprocess=options.preprocess)


# --------------------------------------------------------------- model checks
def is_text_data(data: Any) -> bool:
    return "tokenizer" in getattr(data, "preprocess", {})


def check_text_preprocess(data: TensorData, preprocess: Mapping[str, Any] | None) -> None:
    """Refuse token ids made by another tokenizer or maximum length than the model's, in one line."""
    want = {k: v for k, v in (preprocess or {}).items() if k in ("tokenizer", "max_length")}
    have = {k: v for k, v in data.preprocess.items() if k in ("tokenizer", "max_length")}
    if not want and not have:
        return
    if not have:
        raise TransferkitError(f"the model reads text (tokenizer {want.get('tokenizer')}) but {data.name} is not text; "
                               "give a .csv/.tsv/.jsonl/.txt file, a folder of .txt files per class or amazon:DOMAIN")
    if not want:
        return  # a model built in Python without a recorded tokenizer: nothing to compare
    if have != want:
        raise TransferkitError(
            f"{data.name} was tokenised with {have.get('tokenizer')} to {have.get('max_length')} tokens but the model was "
            f"trained on {want.get('tokenizer')} to {want.get('max_length')} tokens; load it with the model's "
            "tokenizer and --max-length (or leave both unset: they are read from the model)"
        )


def text_options(p: Mapping[str, Any], quiet: bool | None = None) -> TextOptions | None:
    """Text options of a command: the tokenizer from ``--tokenizer``, a text ``--model`` or a trained model.

    The tokenizer and maximum length of a trained model (``--init``, ``--model-from``,
    ``--teacher``, ``--features-from``, a model in ``--models``) are read from its checkpoint's
    metadata, so data given to it is tokenised as its training data was. ``None`` when nothing
    names a text model.
    """
    from ..models.text import is_text_model, tokenizer_name

    saved = _saved_text_preprocess(p)
    tok = p.get("tokenizer") or (p.get("arch") if is_text_model(p.get("arch")) else None)
    if tok is None and is_text_model(p.get("model")):
        tok = p.get("model")
    if tok is None and saved:
        tok = saved.get("tokenizer")
    if tok is None:
        return None
    length = p.get("max_length") or (saved or {}).get("max_length") or DEFAULT_MAX_LENGTH
    return TextOptions(tokenizer_name(str(tok)), int(length), p.get("text_column"), p.get("label_column"),
                       bool(p.get("quiet")) if quiet is None else quiet)


def _saved_text_preprocess(p: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``preprocess`` of the first trained model the command names that reads text (metadata only)."""
    candidates = [p.get(k) for k in ("init", "model_from", "teacher", "features_from")]
    for key in ("models", "models_opt", "more_models"):  # rank's candidates
        models = p.get(key)
        if isinstance(models, (list, tuple)):
            candidates += list(models)
    for c in candidates:
        if not c or not isinstance(c, str):
            continue
        path = Path(c)
        files = [path] if path.is_file() else [path / "checkpoints" / "best" / "model.safetensors",
                                               path / "checkpoints" / "last" / "model.safetensors",
                                               path / "model.safetensors", path / "source_model.safetensors"]
        for f in files:
            prep = _metadata_preprocess(f)
            if prep is not None:
                return prep
    return None


def _metadata_preprocess(path: Path) -> dict[str, Any] | None:
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        prep = (json.loads(meta.get("transferkit", "{}")).get("spec") or {}).get("preprocess") or {}
    except Exception:  # an unreadable checkpoint is reported when the model is loaded
        return None
    return dict(prep) if "tokenizer" in prep else None


# ---------------------------------------------------------------- augmenting
def drop_tokens(ids: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Token dropout on a whole batch: each non-padding token but the first (CLS) becomes padding with prob. ``rate``.

    A dropped token leaves the attention mask and the pooling (it is padding, id 0); the
    strong view of AdaMatch/FixMatch on text (word dropout, as in Xie et al. 2020, UDA).
    """
    if rate <= 0:
        return ids
    draw = torch.rand(ids.shape, generator=generator).to(ids.device)
    drop = (draw < rate) & (ids != 0)
    drop[:, 0] = False
    return ids.masked_fill(drop, 0)


def with_preprocess(data: TensorData, **extra: Any) -> TensorData:
    return replace(data, preprocess={**data.preprocess, **extra})
