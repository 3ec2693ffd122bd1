"""The config validator: every malformed config or option is one clear line, never a traceback."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferkit.cli import main
from transferkit.commands.finetune import train_cmd

OPTION_KEYS = sorted({max(p.opts, key=len)[2:] for p in train_cmd.params if getattr(p, "opts", None)} - {"help", "config"})


def run_config(text: str | bytes, capsys, extra: list[str] | None = None) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "c.yaml"
        if isinstance(text, bytes):
            cfg.write_bytes(text)
        else:
            cfg.write_text(text, encoding="utf-8")
        capsys.readouterr()
        # --help after --config: a config that passes validation prints help instead of training
        rc = main(["train", "--config", str(cfg), *(extra or ["--help"])])
        out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("text", "must_contain"),
    [
        ("epochs: ten\n", ["'epochs'", "an integer >= 1", "'ten'"]),
        ("epochs: 2.5\n", ["'epochs'", "2.5"]),
        ("epochs: true\n", ["'epochs'", "got true"]),
        ("epochs: 0\n", ["'epochs'", ">= 1", "got 0"]),
        ("epochs: [1, 2]\n", ["'epochs'", "a list"]),
        ("lr: .nan\n", ["'lr'", "a number > 0", "nan"]),
        ("lr: -1\n", ["'lr'", "got -1"]),
        ("momentum: {a: 1}\n", ["'momentum'", "a mapping"]),
        ("optimizer: adamx\n", ["'optimizer'", "one of sgd, adam, adamw", "'adamx'"]),
        ("optimizer: [sgd]\n", ["'optimizer'", "one of"]),
        ("deterministic: 'yes'\n", ["'deterministic'", "true or false"]),
        ("deterministic: 1\n", ["'deterministic'", "true or false"]),
        ("data: true\n", ["'data'", "a string", "got true"]),
        ("data: {name: digits}\n", ["'data'", "a mapping"]),
        ("data: 2020-01-01\n", ["'data'", "date"]),
        ("epoch: 3\n", ["unknown key 'epoch'", "did you mean 'epochs'?", "known keys:"]),
        ("config: other.yaml\n", ["unknown key 'config'"]),
        ("command: distill\n", ["config for `transferkit 'distill'`"]),
        ("- epochs\n- 3\n", ["must be a mapping", "got a list"]),
        ("just a string\n", ["must be a mapping", "single value"]),
        ("epochs: [\n", ["could not read config", "line"]),
        ("a: 1\na: [\n", ["could not read config"]),
        ("d: 2020-02-30\n", ["could not read config"]),
        ("? [a, b]\n: 1\n", ["could not read config"]),
        ("epochs: !!python/name:os.system\n", ["!!python/object are refused"]),
    ],
)
def test_malformed_config_is_one_line_naming_field_value_and_allowed(text, must_contain, capsys):
    rc, _, err = run_config(text, capsys)
    assert rc == 2
    line = one_error_line(err)
    for part in must_contain:
        assert part in line, line


def test_non_utf8_and_missing_config(tmp_path, capsys):
    rc, _, err = run_config(b"epochs: \xff\xfe\n", capsys)
    assert rc == 2 and "not UTF-8" in one_error_line(err)
    rc = main(["train", "--config", str(tmp_path / "nope.yaml"), "--help"])
    assert rc == 2 and "config file not found" in one_error_line(capsys.readouterr().err)


def test_valid_config_is_accepted_with_option_spellings(capsys):
    text = "model: mlp\nbatch-size: 32\nbatch_size: 16\nepochs: 2.0\nlr: '0.01'\nchannels: 1\npatience: null\ncommand: train\n"
    rc, out, err = run_config(text, capsys)
    assert rc == 0 and "Usage:" in out and err == ""


def test_config_values_reach_the_command(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: digits\nmodel: mlp\nepochs: 1\nval_split: 0\nquiet: true\ndevice: cpu\n")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--epochs", "1"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["arch"] == "mlp" and saved["val_split"] == 0 and saved["quiet"] is True
    # a run's saved config.yaml is itself a valid config for the same command
    rc, _, err = run_config((tmp_path / "run" / "config.yaml").read_text(), capsys)
    assert rc == 0, err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_number_on_command_line(value, capsys):
    rc = main(["train", "--data", "digits", "--lr", value])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and line == f"error: option --lr must be a number > 0, got {value}"


# ------------------------------------------------------------ property based
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12), st.dates(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
keys = st.one_of(st.sampled_from(OPTION_KEYS), st.text(string.ascii_letters + "-_", min_size=1, max_size=12), st.integers(0, 5))
configs = st.dictionaries(keys, values, max_size=5)


def _error_or_help(rc: int, out: str, err: str) -> None:
    if rc == 0:
        assert "Usage:" in out and err == ""
        return
    assert rc == 2, (rc, err)
    one_error_line(err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs)
def test_random_configs_never_crash(cfg, capsys):
    rc, out, err = run_config(yaml.safe_dump(cfg, allow_unicode=True), capsys)
    _error_or_help(rc, out, err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=80), st.text(alphabet=":-[]{}!&*#?|>'\"%@`\n ,ab1.", max_size=60)))
def test_random_yaml_text_never_crashes(text, capsys):
    rc, out, err = run_config(text, capsys)
    _error_or_help(rc, out, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(OPTION_KEYS), value=st.one_of(st.lists(st.integers(), min_size=2, max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2)))
def test_collections_where_one_value_is_expected_name_the_field(key, value, capsys):
    rc, _, err = run_config(yaml.safe_dump({key: value}), capsys)
    param = next(p for p in train_cmd.params if getattr(p, "opts", None) and max(p.opts, key=len) == f"--{key}")
    if getattr(param, "multiple", False) and isinstance(value, list):
        return  # a list is what a repeatable option takes (its items are checked elsewhere)
    if getattr(param, "nargs", 1) > 1 and isinstance(value, list) and len(value) == param.nargs:
        return  # a pair option (--augment-scale LO HI) takes a list of its length
    assert rc == 2
    assert f"'{key}'" in one_error_line(err)


def test_pair_option_from_config_and_its_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: digits\nmodel: mlp\nepochs: 1\nval_split: 0\nquiet: true\ndevice: cpu\naugment_scale: [0.9, 1.1]\n")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["augment_scale"] == [0.9, 1.1]
    rc, _, err = run_config("augment_scale: 0.9\n", capsys)
    assert rc == 2 and "'augment_scale' must be a list of 2 values, got 0.9" in one_error_line(err)
    rc, _, err = run_config("augment_scale: [0.9, x]\n", capsys)
    assert rc == 2 and "'augment_scale'" in one_error_line(err)
    rc = main(["train", "--data", "digits", "--model", "mlp", "--augment-scale", "1.2", "0.8", "--run-dir", str(tmp_path / "r2")])
    assert rc == 2 and "LO <= HI" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r2").exists()
