"""Text: sources, tokenisation into id tensors, the text backbones and every family on a tiny corpus.

A tiny random BERT (2 layers, 32-d) and a word-level tokenizer are saved to a temporary folder
(``hf:PATH``), so each test takes seconds; tests on the real MiniLM are in test_text_minilm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_text_common import corpus, make_tiny_bert, write_csv
from transferkit.cli import main
from transferkit.data import TensorData, load_data
from transferkit.data.text import (
    TextOptions,
    check_text_preprocess,
    drop_tokens,
    load_text,
    read_amazon_reviews,
    tokenize,
)
from transferkit.data.transforms import Augment
from transferkit.errors import TransferkitError
from transferkit.models import create_model, load_model
from transferkit.models.text import sorted_chunks, trim

MAX = 24


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"hf:{make_tiny_bert(tmp_path_factory.mktemp('tiny') / 'bert')}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("texts")
    a_texts, a_labels = corpus(64, 0, "book")
    b_texts, b_labels = corpus(64, 1, "film")
    out = {"a": write_csv(d / "a.csv", a_texts, a_labels), "b": write_csv(d / "b.csv", b_texts, b_labels)}
    out["new"] = d / "new.txt"
    out["new"].write_text("this film is great\n\nthis phone is awful\n")
    return out


def opts(bert: str, **kw: object) -> TextOptions:
    return TextOptions(bert, kw.pop("max_length", MAX), quiet=True, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ sources
def test_csv_becomes_padded_token_ids_with_classes(bert: str, files: dict[str, Path]) -> None:
    data = load_data(str(files["a"]), text=opts(bert))
    assert data.x.dtype == torch.int64 and data.x.shape == (64, MAX)
    assert data.classes == ["neg", "pos"] and data.y is not None and data.y[:2].tolist() == [1, 0]
    assert data.preprocess == {"tokenizer": bert, "max_length": MAX}
    from transferkit.models.text import load_tokenizer

    tok = load_tokenizer(bert)
    want = tok("this book is good")["input_ids"]
    ids, cut = tokenize(["this book is good"], tok, MAX)
    assert cut == 0 and ids[0, : len(want)].tolist() == [i + 1 for i in want] and ids[0, len(want):].eq(0).all()


def test_truncation_is_said_once_and_keeps_the_final_token(bert: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["good " * 40, "bad", "good " * 30]
    write_csv(tmp_path / "long.csv", texts, ["p", "n", "p"])
    data = load_text(str(tmp_path / "long.csv"), TextOptions(bert, 8))
    err = capsys.readouterr().err
    assert err.count("truncated 2 of 3 texts to 8 tokens") == 1
    from transferkit.models.text import load_tokenizer

    sep = load_tokenizer(bert).sep_token_id + 1
    assert data.x[0, -1] == sep and data.x[0].ne(0).all()


def test_tsv_jsonl_folder_and_txt_sources(bert: str, tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_text("label\tsentence\npos\tit is good, very good\nneg\tbad\n", encoding="utf-8")
    tsv = load_text(str(tmp_path / "r.tsv"), opts(bert, text_column="sentence"))
    assert tsv.classes == ["neg", "pos"] and len(tsv) == 2
    (tmp_path / "r.jsonl").write_text('{"review": "good", "stars": 5}\n\n{"review": "bad", "stars": 1}\n{"review": "fine", "stars": 10}\n')
    js = load_text(str(tmp_path / "r.jsonl"), opts(bert, text_column="review", label_column="stars"))
    assert js.classes == ["1", "5", "10"] and js.y is not None and js.y.tolist() == [1, 0, 2]  # integer labels: numeric order
    for c in ("neg", "pos"):
        (tmp_path / "folder" / c).mkdir(parents=True)
        (tmp_path / "folder" / c / "1.txt").write_text(f"{'bad' if c == 'neg' else 'good'} phone")
    folder = load_data(str(tmp_path / "folder"), text=opts(bert))
    assert folder.classes == ["neg", "pos"] and folder.y is not None and folder.y.tolist() == [0, 1]
    (tmp_path / "plain.txt").write_text("good\n\nbad\n")
    plain = load_data(str(tmp_path / "plain.txt"), text=opts(bert))
    assert plain.y is None and len(plain) == 2


AMAZON_SAMPLE = """<review>
<rating>
5.0
</rating>
<title>
Works &amp; lasts
</title>
<review_text>
good pan, love it
</review_text>
</review>
<review>
<title>broken <b> tag
<review_text>
awful
</review_text>
<review>
<title>no closing tags at all
"""


def test_amazon_reviews_are_parsed_leniently(bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "amazon-reviews" / "raw_text" / "kitchen"
    folder.mkdir(parents=True)
    (folder / "positive.review").write_bytes(AMAZON_SAMPLE.encode() + b"\xff\n")
    (folder / "negative.review").write_text("<review><title>Bad</title><review_text>it broke</review_text></review>")
    reviews = read_amazon_reviews(folder / "positive.review")
    assert reviews[0] == ("Works & lasts", "good pan, love it") and reviews[1][1] == "awful" and len(reviews) == 3
    monkeypatch.setenv("TRANSFERKIT_DATA_DIR", str(tmp_path))
    data = load_data("amazon:kitchen", text=opts(bert))
    assert data.classes == ["negative", "positive"] and data.y is not None and data.y.tolist() == [0, 1, 1]
    with pytest.raises(TransferkitError, match=r"reviews of 'toys' not found; looked in .*amazon-reviews/raw_text/toys"):
        load_data("amazon:toys", text=opts(bert))


@pytest.mark.parametrize(
    ("content", "kw", "message"),
    [
        (b"text,label\ncaf\xe9 good,pos\n", {}, r"not UTF-8 text \(byte 0xe9 on line 2"),
        (b"text,label\ngood,pos\n  ,neg\n", {}, r"1 empty text\(s\) \(line 3 first\)"),
        (b"review,label\ngood,pos\n", {}, r"no text column 'text' \(columns: review, label\); name it with --text-column"),
        (b"text,label\ngood,pos\n", {"label_column": "stars"}, r"no label column 'stars'"),
        (b"text,label\ngood,pos\nbad,\n", {}, r"1 text\(s\) have no label \(line 3 first\)"),
    ],
)
def test_bad_text_files_are_one_line(bert: str, tmp_path: Path, content: bytes, kw: dict[str, str], message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(TransferkitError, match=message) as info:
        load_text(str(path), opts(bert, **kw))
    assert "\n" not in str(info.value)


def test_missing_model_folder_and_tokenizer_say_where(tmp_path: Path, bert: str) -> None:
    with pytest.raises(TransferkitError, match=rf"text model folder {tmp_path / 'nope'} does not exist"):
        create_model(f"hf:{tmp_path / 'nope'}", 2, (MAX,))
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    src = Path(bert[3:])
    (no_tok / "config.json").write_text((src / "config.json").read_text())
    from transferkit.models.text import load_tokenizer

    with pytest.raises(TransferkitError, match=rf"no tokenizer in {no_tok}"):
        load_tokenizer(f"hf:{no_tok}")
    with pytest.raises(TransferkitError, match=r"reads text \(token ids of shape \(L,\)\)"):
        create_model(bert, 2, (1, 8, 8))
    with pytest.raises(TransferkitError, match=r"--max-length 512 is longer than .* \(128 positions\)"):
        create_model(bert, 2, (512,))


# ------------------------------------------------------------------ backbone
def test_backbone_trims_sorts_and_matches_unpadded_encoding(bert: str, files: dict[str, Path]) -> None:
    data = load_data(str(files["a"]), text=opts(bert))
    model = create_model(bert, 2, data.input_shape).eval()
    assert [n for n, _ in model.layer_groups()] == ["backbone.embeddings", "backbone.layer0", "backbone.layer1", "backbone.pooler", "head"]
    assert model.spec["preprocess"] == data.preprocess  # the model carries its tokenisation
    ids = torch.tensor([[3, 5, 6, 0, 0], [3, 0, 0, 0, 0]])
    assert trim(ids).shape == (2, 3)
    with torch.no_grad():
        together = model.features(data.x)  # 64 rows: the sorted-chunk path when > INFERENCE_CHUNK? (64: one batch)
        one_by_one = torch.cat([model.features(data.x[i : i + 1]) for i in range(len(data))])
        chunks = sorted_chunks(model.backbone.encode, data.x, chunk=7)
        full_width = model.backbone.encode(data.x)  # no trimming: padding must not change the result
    assert torch.allclose(together, one_by_one, atol=1e-5)
    assert torch.allclose(chunks, one_by_one, atol=1e-5)
    assert torch.allclose(full_width, one_by_one, atol=1e-5)


def test_token_dropout_is_batched_and_only_touches_tokens() -> None:
    ids = torch.tensor([[3, 5, 6, 7, 8, 4, 0, 0]] * 200)
    g = torch.Generator().manual_seed(0)
    out = drop_tokens(ids, 0.3, g)
    assert out[:, 0].eq(3).all() and out[:, 6:].eq(0).all()  # CLS kept, padding stays padding
    rate = float((out[:, 1:6] == 0).float().mean())
    assert 0.25 < rate < 0.35
    strong = Augment(shift=2.0)(ids, torch.Generator().manual_seed(1))  # an image augmentation means word dropout on text
    assert 0.05 < float((strong[:, 1:6] == 0).float().mean()) < 0.15
    assert torch.equal(Augment()(ids), ids)


def test_other_tokenisation_than_training_is_refused(bert: str, files: dict[str, Path]) -> None:
    data = load_data(str(files["a"]), text=opts(bert))
    check_text_preprocess(data, {"tokenizer": bert, "max_length": MAX})
    with pytest.raises(TransferkitError, match=r"tokenised with .* to 24 tokens but the model was trained on minilm to 128 tokens"):
        check_text_preprocess(data, {"tokenizer": "minilm", "max_length": 128})
    image = TensorData(torch.zeros(2, 1, 4, 4), None)
    with pytest.raises(TransferkitError, match="the model reads text"):
        check_text_preprocess(image, {"tokenizer": "minilm", "max_length": 128})


def test_students_take_the_same_ids(bert: str, files: dict[str, Path]) -> None:
    data = load_data(str(files["a"]), text=opts(bert))
    for arch in ("text-bag", "text-tiny"):
        student = create_model(arch, 2, data.input_shape, vocab_size=100)
        assert student(data.x).shape == (64, 2)
        small = create_model(arch, 2, data.input_shape, vocab_size=5)
        with pytest.raises(TransferkitError, match="outside this student's vocabulary of 5"):
            small(data.x)


# ------------------------------------------------------------------ families (command line)
def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_finetune_predict_eval_export_on_text(bert: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--data", str(files["a"]), "--max-length", str(MAX), "--epochs", "2", "--quiet", "--seed", "0"]
    rc, out = run_cli(["finetune", "--model", bert, "--strategy", "full", "--lr-decay", "0.8", "--lr", "3e-3",
                       "--run-dir", str(tmp_path / "full"), *common], capsys)
    assert rc == 0, out
    model = load_model(tmp_path / "full")
    assert model.spec["preprocess"] == {"tokenizer": bert, "max_length": MAX} and model.classes == ["neg", "pos"]
    rc, out = run_cli(["finetune", "--model", bert, "--strategy", "linear-probe", "--run-dir", str(tmp_path / "lp"), *common], capsys)
    assert rc == 0, out
    summary = json.loads((tmp_path / "lp" / "summary.json").read_text())
    assert summary["method"] == "linear-probe"
    out_csv = tmp_path / "p.csv"
    rc, out = run_cli(["predict", "--model-from", str(tmp_path / "full"), "--data", str(files["new"]), "--output", str(out_csv)], capsys)
    assert rc == 0, out
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "index,prediction,p_neg,p_pos" and len(lines) == 3
    rc, out = run_cli(["eval", "--model-from", str(tmp_path / "full"), "--data", str(files["b"])], capsys)
    assert rc == 0 and "accuracy" in out
    rc, out = run_cli(["predict", "--model-from", str(tmp_path / "full"), "--data", str(files["new"]), "--max-length", "12",
                       "--output", str(tmp_path / "q.csv")], capsys)
    assert rc == 2 and "error: new was tokenised with" in out and "Traceback" not in out
    rc, out = run_cli(["rank", "--models", str(tmp_path / "full"), str(tmp_path / "lp"), "--data", str(files["b"])], capsys)
    assert rc == 0 and "transferability to b (64 labelled examples, 2 classes)" in out, out
    rc, out = run_cli(["export", "--model-from", str(tmp_path / "full"), "--data", str(files["b"]), "--output", str(tmp_path / "m.pt")], capsys)
    assert rc == 0 and "torchscript" in out and " ok" in out, out


def test_lora_on_text_adapts_attention_and_feed_forward(bert: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(["finetune", "--model", bert, "--strategy", "lora", "--data", str(files["a"]), "--max-length", str(MAX),
                       "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "lora")], capsys)
    assert rc == 0, out
    summary = json.loads((tmp_path / "lora" / "summary.json").read_text())
    targets = summary["lora"]["targets"]
    names = {t.rsplit(".", 1)[-1] for t in targets}
    assert {"query", "key", "value", "dense"} <= names and not any("pooler" in t for t in targets)
    assert len(targets) == 2 * 6  # per layer: query, key, value, attention output, intermediate, output


def test_adapt_dann_and_shallow_coral_on_text(bert: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(["adapt", "--method", "dann", "--model", bert, "--source", str(files["a"]), "--target", str(files["b"]),
                       "--target-test", str(files["b"]), "--max-length", str(MAX), "--epochs", "1", "--source-epochs", "1",
                       "--quiet", "--run-dir", str(tmp_path / "dann")], capsys)
    assert rc == 0, out
    summary = json.loads((tmp_path / "dann" / "summary.json").read_text())
    assert summary["selection"]["oracle"] is False and "target_test" in summary
    rc, out = run_cli(["adapt", "--method", "coral", "--features-from", str(tmp_path / "dann"), "--source", str(files["a"]),
                       "--target", str(files["b"]), "--target-test", str(files["b"]), "--quiet", "--run-dir", str(tmp_path / "coral")], capsys)
    assert rc == 0, out
    assert "coral" in json.loads((tmp_path / "coral" / "summary.json").read_text())["method"]
    rc, out = run_cli(["gap", "--source", str(files["a"]), "--target", str(files["b"]), "--features-from", str(tmp_path / "dann"),
                       "--plot", str(tmp_path / "gap.png"), "--tsne-points", "30", "--max-samples", "40"], capsys)
    assert rc == 0 and "proxy A-distance" in out and (tmp_path / "gap.png").stat().st_size > 0, out
    rc, out = run_cli(["report", str(tmp_path / "dann"), "--tsne-points", "20"], capsys)
    assert rc == 0, out
    md = (tmp_path / "dann" / "report.md").read_text()
    assert "skipped" not in md and "t-SNE" in md and "onfusion" in md, md[:2000]


def test_distill_text_teacher_into_bag_student(bert: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(["finetune", "--model", bert, "--strategy", "full", "--data", str(files["a"]), "--max-length", str(MAX),
                       "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "teacher")], capsys)
    assert rc == 0, out
    rc, out = run_cli(["distill", "--teacher", str(tmp_path / "teacher"), "--student", "text-bag", "--data", str(files["a"]),
                       "--epochs", "2", "--quiet", "--run-dir", str(tmp_path / "student"), "--export", "torchscript"], capsys)
    assert rc == 0, out
    assert "teacher vs student" in out and "torchscript" in out and " ok" in out
    student = load_model(tmp_path / "student")
    assert student.spec["arch"] == "text-bag" and student.spec["preprocess"]["tokenizer"] == bert


def test_text_without_a_text_model_is_one_line(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(["train", "--data", str(files["a"]), "--model", "mlp", "--run-dir", str(tmp_path / "x")], capsys)
    assert rc == 2 and "holds text: say which text model reads it" in out and "Traceback" not in out
