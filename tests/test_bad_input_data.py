"""Malformed data and mismatched requests end in one `error:` line (status 2), never a traceback.

Issue 13, part A: `.npz`/`.csv` loaders, labels, non-finite inputs, one-class data, distillation
classes, `gap` sample counts, sinusoid with ProtoNets, memory estimates, strict JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.cli import main
from transferkit.data import TensorData, load_data
from transferkit.data import tensors as tensors_mod
from transferkit.distill import check_classes_agree
from transferkit.errors import TransferkitError
from transferkit.io import write_json
from transferkit.models import create_model

GIB = 2**30


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr: exactly one line, starting with `error:`, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def train_args(data: Path | str, run: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "mlp", "--epochs", "1", "--quiet", "--device", "cpu",
            "--run-dir", str(run), *extra]


def features(n: int = 30, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mlp trained for one epoch on digits (10 classes, inputs 1x8x8)."""
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main(train_args("digits", run, "--val-split", "0")) == 0
    return run


# ---------------------------------------------------------------- 1. .npz files
def test_npz_with_text_features_says_so(tmp_path, capsys) -> None:
    np.savez(tmp_path / "t.npz", X=np.array([["1.5", "abc"]] * 6), y=np.arange(6) % 2)
    assert main(train_args(tmp_path / "t.npz", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "X holds text" in line and "numbers" in line
    assert not (tmp_path / "run").exists()


def test_npz_object_array_is_refused_without_suggesting_pickle(tmp_path, capsys) -> None:
    np.savez(tmp_path / "o.npz", X=np.array([[1.0, None]] * 6, dtype=object), y=np.arange(6) % 2)
    assert main(train_args(tmp_path / "o.npz", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "Python objects" in line and "allow_pickle" not in line and "pickle" not in line


def test_npz_with_two_dimensional_labels_is_refused_and_a_column_vector_accepted(tmp_path, capsys) -> None:
    y = np.arange(30) % 3
    np.savez(tmp_path / "onehot.npz", X=features(), y=np.eye(3)[y])
    assert main(train_args(tmp_path / "onehot.npz", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "one label per example" in line and "(30, 3)" in line and "argmax" in line
    np.savez(tmp_path / "col.npz", X=features(), y=y[:, None])
    assert load_data(str(tmp_path / "col.npz")).y.tolist() == y.tolist()


def test_npz_that_is_not_an_archive(tmp_path, capsys) -> None:
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "junk.npz").write_bytes(b"\x80\x04not a zip at all")
    with open(tmp_path / "single.npz", "wb") as fh:
        np.save(fh, features())
    for name, expect in (("empty", "not a NumPy .npz archive"), ("junk", "not a NumPy .npz archive"), ("single", "single .npy array")):
        assert main(train_args(tmp_path / f"{name}.npz", tmp_path / "run")) == 2
        line = one_error_line(capsys)
        assert expect in line and "pickle" not in line


# ----------------------------------------------------------------- 2. .csv files
def test_latin1_csv_asks_for_utf8(tmp_path, capsys) -> None:
    (tmp_path / "l.csv").write_bytes("a,b,label\n1,2,caf\xe9\n3,4,th\xe9\n5,6,caf\xe9\n".encode("latin-1"))
    assert main(train_args(tmp_path / "l.csv", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "not UTF-8" in line and "save it as UTF-8" in line


def test_ragged_csv_is_reported_as_ragged_with_the_line(tmp_path, capsys) -> None:
    (tmp_path / "r.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6\n7,8,x\n")
    assert main(train_args(tmp_path / "r.csv", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "ragged" in line and "line 4" in line and "non-numeric" not in line


def test_csv_non_numeric_value_names_line_and_column(tmp_path, capsys) -> None:
    (tmp_path / "n.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    assert main(train_args(tmp_path / "n.csv", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "line 3" in line and "column 'b'" in line and "'oops'" in line


def test_csv_utf8_with_bom_and_blank_lines_loads(tmp_path) -> None:
    (tmp_path / "b.csv").write_bytes("\ufeffa,b,label\n1,2,x\n\n3,4,y\n".encode())
    d = load_data(str(tmp_path / "b.csv"))
    assert d.x.shape == (2, 2) and d.classes == ["x", "y"]


def test_csv_empty_label_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "e.csv").write_text("a,b,label\n1,2,x\n3,4,\n5,6,y\n")
    assert main(train_args(tmp_path / "e.csv", tmp_path / "run")) == 2
    assert "no label (line 3)" in one_error_line(capsys)


# ----------------------------------------------------------- 3. huge labels
def test_huge_label_is_refused_before_anything_is_allocated(tmp_path, capsys, digits_run) -> None:
    y = np.arange(30) % 3
    y[7] = 2_000_000_000
    np.savez(tmp_path / "h.npz", X=features(), y=y)
    for args in (train_args(tmp_path / "h.npz", tmp_path / "run"),
                 ["eval", "--model-from", str(digits_run), "--data", str(tmp_path / "h.npz")]):
        assert main(args) == 2
        line = one_error_line(capsys)
        assert "label 2000000000 (row 7)" in line and "class indices" in line and "np.unique" in line


def test_sparse_labels_far_beyond_the_examples_are_refused(tmp_path) -> None:
    # 2 million classes for 30 examples was accepted before (a list of 2 million names, then a head that wide)
    y = np.arange(30) % 3
    y[0] = 2_000_000
    np.savez(tmp_path / "s.npz", X=features(), y=y)
    with pytest.raises(TransferkitError, match="would make 2000001 classes for 30 examples"):
        load_data(str(tmp_path / "s.npz"))
    with pytest.raises(TransferkitError, match="classes for 2 examples"):
        TensorData(torch.zeros(2, 1), torch.tensor([0, 2_000_000_000]))
    y[0] = 999  # a few classes absent is fine: classes are 0..999
    np.savez(tmp_path / "ok.npz", X=features(), y=y)
    assert load_data(str(tmp_path / "ok.npz")).num_classes == 1000


# ---------------------------------------------- 4. non-finite labels, strict JSON
def test_nan_label_is_refused_not_a_class_named_nan(tmp_path, capsys) -> None:
    y = (np.arange(30) % 3).astype(np.float64)
    y[4] = np.nan
    np.savez(tmp_path / "nan.npz", X=features(), y=y)
    assert main(train_args(tmp_path / "nan.npz", tmp_path / "run")) == 2
    assert "NaN or infinite (row 4)" in one_error_line(capsys)
    (tmp_path / "nan.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,nan\n7,8,inf\n")
    with pytest.raises(TransferkitError, match=r"2 label\(s\) are NaN or infinite \(line 4, line 5\)"):
        load_data(str(tmp_path / "nan.csv"))
    with pytest.raises(TransferkitError, match="whole class indices"):
        TensorData(torch.zeros(2, 1), torch.tensor([0.0, float("nan")]))


def test_write_json_writes_strict_json(tmp_path) -> None:
    path = write_json(tmp_path / "s.json", {"acc": float("nan"), "loss": [1.5, float("inf"), -float("inf")], "n": 3})
    text = path.read_text()

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    assert json.loads(text, parse_constant=refuse) == {"acc": None, "loss": [1.5, None, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text


# ------------------------------------------------------ 5. NaN / Inf in inputs
def test_nan_and_inf_inputs_are_refused_when_loading_naming_rows(tmp_path, capsys) -> None:
    x = features()
    x[3, 1], x[11, 0] = np.nan, np.inf
    np.savez(tmp_path / "x.npz", X=x, y=np.arange(30) % 3)
    assert main(train_args(tmp_path / "x.npz", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "2 example(s) have NaN or infinite input values" in line and "row 3, row 11" in line
    assert "loss became nan" not in line and not (tmp_path / "run").exists()
    (tmp_path / "x.csv").write_text("a,b,label\n1,2,x\n3,-inf,y\n5,1e999,x\n")
    with pytest.raises(TransferkitError, match=r"\(line 3, line 4\)"):
        load_data(str(tmp_path / "x.csv"))


# ------------------------------------------------------------ 6. one class only
def test_one_class_data_is_refused_for_training(tmp_path, capsys, digits_run) -> None:
    np.savez(tmp_path / "one.npz", X=features(), y=np.zeros(30, dtype=np.int64))
    assert main(train_args(tmp_path / "one.npz", tmp_path / "run")) == 2
    line = one_error_line(capsys)
    assert "1 class only ('0')" in line and "at least 2" in line
    assert not (tmp_path / "run").exists()
    img = np.random.default_rng(0).random((30, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "one_img.npz", X=img, y=np.full(30, 4))
    assert main(["finetune", "--init", str(digits_run), "--data", str(tmp_path / "one_img.npz"), "--epochs", "1", "--quiet",
                 "--run-dir", str(tmp_path / "ft")]) == 2
    assert "1 class only ('4')" in one_error_line(capsys)
    assert main(["adapt", "--method", "dann", "--source", str(tmp_path / "one.npz"), "--target", str(tmp_path / "one.npz"),
                 "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "ad")]) == 2
    assert "1 class only" in one_error_line(capsys)


# --------------------------------------------------- 7. distillation classes
def test_distill_teacher_student_and_data_must_agree_on_classes(tmp_path, capsys, digits_run) -> None:
    img = np.random.default_rng(1).random((30, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "three.npz", X=img, y=np.arange(30) % 3)
    assert main(["distill", "--teacher", str(digits_run), "--student", "mlp", "--data", str(tmp_path / "three.npz"),
                 "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "st")]) == 2
    line = one_error_line(capsys)
    assert "the teacher predicts 10 classes but three has 3" in line and "--transfer-data" in line
    assert not (tmp_path / "st").exists()
    # unlabelled transfer data: the student learns the teacher's 10 classes
    assert main(["distill", "--teacher", str(digits_run), "--student", "mlp", "--transfer-data", str(tmp_path / "three.npz"),
                 "--epochs", "1", "--quiet", "--no-latency", "--run-dir", str(tmp_path / "st2")]) == 0


def test_distill_class_names_must_match_where_both_have_names() -> None:
    teacher = create_model("mlp", 3, (4,), classes=["cat", "dog", "fox"])
    student = create_model("mlp", 3, (4,), classes=["cat", "dog", "fox"])
    named = TensorData(torch.zeros(3, 4), torch.tensor([0, 1, 2]), ["ant", "bee", "cow"], "zoo")
    with pytest.raises(TransferkitError, match=r"teacher's classes \(cat, dog, fox\) are not those of zoo"):
        check_classes_agree(teacher, student, named)
    check_classes_agree(teacher, student, TensorData(torch.zeros(3, 4), torch.tensor([0, 1, 2]), name="ints"))
    other = create_model("mlp", 3, (4,), classes=["a", "b", "c"])
    with pytest.raises(TransferkitError, match="differ from the student's"):
        check_classes_agree(teacher, other, None)


# ------------------------------------------------------------- 8. gap minimum
def test_gap_refuses_fewer_than_ten_samples_per_domain(tmp_path, capsys) -> None:
    np.savez(tmp_path / "a.npz", X=features(6, seed=1))
    np.savez(tmp_path / "b.npz", X=features(6, seed=2) + 1)
    assert main(["gap", "--source", str(tmp_path / "a.npz"), "--target", str(tmp_path / "b.npz"), "--tsne-points", "0"]) == 2
    line = one_error_line(capsys)
    assert "at least 10 samples per domain" in line and "has 6" in line


# ---------------------------------------------------------- 9. sinusoid + protonet
def test_sinusoid_with_protonet_names_the_methods_that_do_regression(tmp_path, capsys) -> None:
    assert main(["meta", "train", "--data", "sinusoid", "--method", "protonet", "--epochs", "1", "--quiet",
                 "--run-dir", str(tmp_path / "m")]) == 2
    line = one_error_line(capsys)
    assert "protonet does not handle regression" in line and "maml, fomaml, anil or reptile" in line
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------ 10. memory estimate
def test_image_size_beyond_available_memory_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(tensors_mod, "available_memory", lambda: 2 * GIB)
    assert main(train_args("digits", tmp_path / "run", "--image-size", "1024")) == 2
    line = one_error_line(capsys)
    # digits' train split: 1437 x 1 x 1024 x 1024 x 4 bytes
    assert f"needs about {1437 * 1024 * 1024 * 4 / GIB:.1f} GiB" in line and "2.0 GiB is available" in line
    assert "--image-size" in line and not (tmp_path / "run").exists()
    monkeypatch.setattr(tensors_mod, "available_memory", lambda: None)  # unknown: no check
    assert load_data("digits", "test", image_size=12).input_shape == (1, 12, 12)


def test_npz_arrays_are_sized_from_their_header_before_reading(tmp_path, monkeypatch) -> None:
    np.savez(tmp_path / "a.npz", X=features(1000, 64), y=np.arange(1000) % 3)
    monkeypatch.setattr(tensors_mod, "available_memory", lambda: 100_000)
    with pytest.raises(TransferkitError, match=r"array 'X' \(1000, 64\) needs about"):
        load_data(str(tmp_path / "a.npz"))
