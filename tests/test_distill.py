"""Distillation: the method, the teacher cache, the Python API, the CLI, bad inputs and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from transferkit.cli import main
from transferkit.data import Augment, TensorData, load_data
from transferkit.distill import (
    Distill,
    DistillSpec,
    TeacherCache,
    build_losses,
    compare,
    distill,
    export_model,
    load_teacher,
)
from transferkit.engine import StepInfo, Supervised, TrainConfig, Trainer, evaluate
from transferkit.errors import TransferkitError
from transferkit.models import create_model

QUIET = {"verbose": False, "callbacks": []}


@pytest.fixture(scope="module")
def digits() -> tuple[TensorData, TensorData]:
    return load_data("digits", "train"), load_data("digits", "test")


@pytest.fixture(scope="module")
def teacher(digits: tuple[TensorData, TensorData]) -> nn.Module:
    """An mlp teacher trained for a few epochs on digits (about 95% test accuracy)."""
    train, _ = digits
    torch.manual_seed(0)
    model = create_model("mlp", 10, train.input_shape, hidden=(128,), classes=train.classes)

    def batches(epoch, gen):
        for idx in torch.randperm(len(train), generator=gen).split(32):
            yield train.x[idx], train.y[idx]

    Trainer(Supervised(model), TrainConfig(epochs=8, lr=3e-3), batches, -(-len(train) // 32), **QUIET).fit()
    return model.eval()


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory, teacher: nn.Module) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    teacher.save(path)
    return path


def student_for(train: TensorData, hidden: tuple[int, ...] = (16,)) -> nn.Module:
    torch.manual_seed(1)
    return create_model("mlp", 10, train.input_shape, hidden=hidden, classes=train.classes)


# --------------------------------------------------------------------- method
def test_teacher_is_not_trainable_and_not_checkpointed(teacher: nn.Module, digits) -> None:
    train, _ = digits
    student = student_for(train)
    spec = DistillSpec(losses={"kd": 1.0, "fitnet": 0.5}, hints=["backbone.fc1:backbone.fc1"])
    spec.validate()
    method = Distill(student, teacher, build_losses(spec, teacher, student, train.x[:4]), spec.losses, spec.hint_pairs())
    teacher_ids = {id(p) for p in teacher.parameters()}
    params = list(method.parameters())
    assert not teacher_ids & {id(p) for p in params}
    assert {id(p) for p in student.parameters()} < {id(p) for p in params}  # plus the regressor
    assert not any(k.startswith("_teacher") or "teacher" in k for k in method.state_dict())
    method.train()
    assert not teacher.training and student.training


def test_cached_and_online_teacher_give_the_same_losses(teacher: nn.Module, digits) -> None:
    train, _ = digits
    student = student_for(train)
    spec = DistillSpec(losses={"kd": 1.0, "fitnet": 1.0, "rkd": 1.0}, hints=["backbone.fc1:backbone.fc1"])
    spec.validate()
    method = Distill(student, teacher, build_losses(spec, teacher, student, train.x[:4]), spec.losses, spec.hint_pairs())
    cache = TeacherCache.build(teacher, train.x, method.teacher_hooks, keep_embedding=True, batch_size=100)
    idx = torch.tensor([5, 17, 3, 400, 1000, 12])
    info = StepInfo(0, 0, 1)
    method.eval()  # no dropout anywhere: identical forward passes
    online = method.training_losses({"x": train.x[idx], "y": train.y[idx]}, info)
    cached = method.training_losses({"x": train.x[idx], "y": train.y[idx], "teacher": cache.slice(idx)}, info)
    assert set(online) == {"kd", "fitnet", "rkd"}
    for k in online:
        assert torch.allclose(online[k], cached[k], atol=1e-6), k


def test_cache_means_the_teacher_never_runs_during_training(teacher: nn.Module, digits) -> None:
    train, _ = digits
    seen: list[int] = []
    handle = teacher.head.register_forward_hook(lambda _m, inp, _o: seen.append(len(inp[0])))
    try:
        distill(teacher, student_for(train), train, None, DistillSpec(), TrainConfig(epochs=2), batch_size=128, **QUIET)
    finally:
        handle.remove()
    # (hooked on the head, which every forward reaches) a 4-example shape check, then exactly one pass over the training set; none in the 2 epochs
    assert sum(seen) == 4 + len(train)


def test_online_teacher_with_augmentation_and_the_log_says_so(teacher: nn.Module, digits, capsys) -> None:
    train, _ = digits
    calls = []
    handle = teacher.head.register_forward_hook(lambda *a: calls.append(1))
    try:
        distill(teacher, student_for(train), train.subset(torch.arange(256)), None, DistillSpec(), TrainConfig(epochs=1),
                batch_size=64, augment=Augment(shift=1.0), verbose=True, callbacks=[])
    finally:
        handle.remove()
    assert "teacher runs online on every batch because random augmentation is on" in capsys.readouterr().err
    assert len(calls) >= 4  # one per batch


def test_kd_student_beats_a_hard_label_student_on_few_labels_and_learns_from_unlabelled_data(teacher, digits) -> None:
    train, test = digits
    t_acc = evaluate(teacher, test)["acc"]
    # unlabelled transfer set: the teacher's outputs are the only labels
    student = student_for(train, (32,))
    distill(teacher, student, train.unlabeled(), None, DistillSpec(losses={"kd": 1.0}, options={"temperature": 2.0}),
            TrainConfig(epochs=15, lr=3e-3), batch_size=64, **QUIET)
    s_acc = evaluate(student, test)["acc"]
    agree = compare(teacher, student, test.x, test.y, latency=False)["agreement"]
    assert s_acc > 80 and s_acc > t_acc - 12
    assert agree > 80


def test_stagewise_fitnet_trains_hints_first_then_kd(teacher, digits) -> None:
    train, _ = digits
    spec = DistillSpec(losses={"kd": 1.0, "fitnet": 1.0}, hints=["backbone.fc1:backbone.fc1"], hint_stage="stagewise", hint_epochs=1)
    _, result = distill(teacher, student_for(train), train, None, spec, TrainConfig(epochs=2), batch_size=256, **QUIET)
    assert set(result.history[0]["train"]) == {"fitnet", "loss"}
    assert set(result.history[1]["train"]) == {"kd", "loss"}


def test_any_nn_module_can_be_teacher_and_student(digits) -> None:
    train, _ = digits
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    spec = DistillSpec(losses={"kd": 1.0, "dkd": 0.5, "rkd": 0.1, "fitnet": 0.5}, hints=["1:1"])
    _, result = distill(teacher, student, train, None, spec, TrainConfig(epochs=1), batch_size=256, **QUIET)
    assert set(result.last["train"]) == {"kd", "dkd", "rkd", "fitnet", "loss"}


# ----------------------------------------------------------------- bad inputs
def test_class_counts_must_match(teacher, digits) -> None:
    train, _ = digits
    student = create_model("mlp", 5, train.input_shape, hidden=(8,))
    with pytest.raises(TransferkitError, match="the teacher predicts 10 classes but the student 5"):
        distill(teacher, student, train, spec=DistillSpec(), **QUIET)


def test_unknown_hint_layer_lists_the_module_paths(teacher, digits) -> None:
    train, _ = digits
    spec = DistillSpec(losses={"fitnet": 1.0}, hints=["backbone.conv9:backbone.fc1"])
    with pytest.raises(TransferkitError, match=r"teacher hint layer: no module named backbone.conv9; module paths are: .*backbone.fc1"):
        distill(teacher, student_for(train), train, spec=spec, **QUIET)
    with pytest.raises(TransferkitError, match="TEACHER_LAYER:STUDENT_LAYER"):
        distill(teacher, student_for(train), train, spec=DistillSpec(losses={"fitnet": 1.0}, hints=["fc1"]), **QUIET)


def test_unreadable_and_foreign_teacher_checkpoints(tmp_path: Path, digits) -> None:
    garbage = tmp_path / "t.safetensors"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(TransferkitError, match=r"--teacher .* could not be read: cannot read .* as safetensors"):
        load_teacher(garbage)
    pickle_file = tmp_path / "t.pt"
    torch.save({"model": nn.Linear(2, 2)}, pickle_file)  # a pickled module, not plain tensors
    with pytest.raises(TransferkitError, match="could not be read: refused to load"):
        load_teacher(pickle_file)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(TransferkitError, match=r"foreign checkpoint .* --teacher-model ARCH"):
        load_teacher(foreign)
    with pytest.raises(TransferkitError, match="does not fit --teacher-model mlp"):
        load_teacher(foreign, "mlp", digits[0])
    with pytest.raises(TransferkitError, match="no such run folder"):
        load_teacher(tmp_path / "missing")


def test_cli_errors_are_one_line(teacher_run: Path, tmp_path: Path, capsys) -> None:
    base = ["distill", "--teacher", str(teacher_run), "--data", "digits", "--epochs", "1", "--quiet"]
    rc = main([*base, "--student", "mlp", "--run-dir", str(tmp_path / "a"), "--loss", "kdx=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown distillation loss name 'kdx'" in err and "Traceback" not in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    rc = main(["distill", "--teacher", str(bad), "--student", "mlp", "--data", "digits", "--run-dir", str(tmp_path / "b")])
    assert rc == 2 and capsys.readouterr().err.count("\n") == 1
    rc = main([*base, "--student", "mlp", "--loss", "fitnet=1", "--hint", "backbone.nope:backbone.fc1", "--run-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "module paths are:" in err and "backbone.fc1" in err


class Branchy(nn.Module):
    """Data-dependent control flow: tracing bakes in one branch, so the export is wrong on the other."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        if float(x.mean()) > 0.5:
            return z * 2
        return z


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_failed_equivalence_check_keeps_a_marked_file_and_raises(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.ones(32, 1, 8, 8)
    x[:2] = 0.0  # the traced example (the first two inputs) takes the "z" branch; the whole batch the other
    with pytest.raises(TransferkitError, match="torchscript export does not reproduce the model"):
        export_model(Branchy(), x, tmp_path / "m.pt", "torchscript")
    assert not (tmp_path / "m.pt").exists()
    assert (tmp_path / "m.FAILED_CHECK.pt").exists()
    check = json.loads((tmp_path / "m.FAILED_CHECK.pt.check.json").read_text())
    assert check["passed"] is False and check["max_abs_diff"] > 1e-3


def test_export_roundtrip_and_cli_export(teacher, teacher_run: Path, digits, tmp_path: Path, capsys) -> None:
    _, test = digits
    for fmt, ext in (("torchscript", ".pt"), ("onnx", ".onnx")):
        check = export_model(teacher, test.x, tmp_path / f"t{ext}", fmt)
        assert check.passed and check.n_inputs == 256 and check.max_abs_diff <= 1e-3
    rc = main(["export", "--model-from", str(teacher_run), "--format", "onnx", "--data", "digits", "--output", str(tmp_path / "cli.onnx")])
    assert rc == 0 and "max |logit diff|" in capsys.readouterr().out
    rc = main(["export", "--model-from", str(teacher_run), "--data", "digits", "--output", str(tmp_path / "cli.onnx")])
    assert rc == 2  # exists, no --overwrite


# ------------------------------------------------------------------------ CLI
def test_cli_distill_end_to_end(teacher_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "student"
    rc = main([
        "distill", "--teacher", str(teacher_run), "--student", "mlp", "--student-hidden", "16", "--data", "digits",
        "--test-data", "digits", "--loss", "kd=1", "--loss", "ce=0.1", "--temperature", "4", "--epochs", "2",
        "--export", "torchscript", "--export", "onnx", "--run-dir", str(run), "--quiet",
    ])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "teacher vs student" in out and "1-thread ms b256" in out
    s = json.loads((run / "summary.json").read_text())
    assert s["family"] == "distill" and s["method"] == "kd=1+ce=0.1" and s["teacher_cached"] is True
    cmp = s["comparison"]
    assert cmp["student"]["parameters"] < cmp["teacher"]["parameters"]
    assert cmp["student"]["size_bytes"] < cmp["teacher"]["size_bytes"]
    assert cmp["teacher"]["latency_ms_b1"] > 0 and cmp["student"]["latency_ms_b256"] > 0
    assert 0 <= cmp["agreement"] <= 100 and "acc" in cmp["student"]
    assert [e["format"] for e in s["exports"]] == ["torchscript", "onnx"] and all(e["passed"] for e in s["exports"])
    assert (run / "student.pt").is_file() and (run / "student.onnx.check.json").is_file()


def test_cli_transfer_data_is_unlabelled(teacher_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "transfer"
    rc = main(["distill", "--teacher", str(teacher_run), "--student", "mlp", "--transfer-data", "digits",
               "--val-data", "digits:test", "--epochs", "1", "--run-dir", str(run), "--quiet", "--no-latency"])
    assert rc == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["unlabelled_transfer_set"] is True and "acc" in s["val"]

