"""Untrusted input: pickles that run code, archives that escape, YAML tags, corrupted downloads."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from transferkit.cli import main
from transferkit.data.download import download
from transferkit.errors import TransferkitError
from transferkit.io import load_yaml, safe_extract_zip, safe_torch_load
from transferkit.models import read_checkpoint


class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"weight": torch.zeros(2), "x": _Payload(marker)}, fh, protocol=2)
    torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, tmp_path / "evil_zip.pt")
    return path, marker


def test_pickle_checkpoint_is_refused_and_code_does_not_run(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    assert not marker.exists()
    for p in (path, tmp_path / "evil_zip.pt"):
        with pytest.raises(TransferkitError, match="refused to load"):
            safe_torch_load(p)
        with pytest.raises(TransferkitError, match="refused to load"):
            read_checkpoint(p)
    assert not marker.exists()


def test_cli_refuses_pickle_init_without_running_it(tmp_path, capsys):
    _, marker = _evil_checkpoint(tmp_path)
    rc = main(["finetune", "--init", str(tmp_path / "evil_zip.pt"), "--model", "mlp", "--data", "digits",
               "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: refused to load") and len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_plain_state_dict_still_loads(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    state, info = read_checkpoint(tmp_path / "ok.pt")
    assert torch.equal(state["w"], torch.ones(3)) and info == {}


@pytest.mark.parametrize("member", ["../escape.txt", "a/../../escape.txt", "/tmp/transferkit-abs-escape.txt"])
def test_archive_member_outside_destination_is_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(member, "gotcha")
    dest = tmp_path / "out"
    with pytest.raises(TransferkitError, match="outside"):
        safe_extract_zip(archive, dest)
    assert not dest.exists()  # nothing extracted, not even the harmless member
    assert not (tmp_path / "escape.txt").exists()


def test_good_archive_extracts(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/a.txt", "ok")
    assert (safe_extract_zip(archive, tmp_path / "out") / "d" / "a.txt").read_text() == "ok"


def test_corrupt_archive_is_one_clear_error(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(TransferkitError, match="not a valid zip"):
        safe_extract_zip(tmp_path / "x.zip", tmp_path / "out")


EVIL_YAML = "epochs: !!python/object/apply:os.system ['touch {marker}']\n"


def test_yaml_python_tag_is_refused(tmp_path, capsys):
    marker = tmp_path / "yaml-pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(EVIL_YAML.format(marker=marker))
    with pytest.raises(TransferkitError, match="python/object"):
        load_yaml(cfg)
    rc = main(["train", "--config", str(cfg), "--data", "digits", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: could not read config") and "!!python/object" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_download_with_wrong_checksum_is_deleted_and_reported(tmp_path):
    src = tmp_path / "served.bin"
    src.write_bytes(b"tampered payload")
    dest = tmp_path / "cache" / "data.bin"
    with pytest.raises(TransferkitError, match=r"checksum mismatch.*deleted"):
        download(src.as_uri(), dest, md5="0" * 32)
    assert not dest.exists() and not dest.with_name("data.bin.part").exists()
    good = hashlib.md5(b"tampered payload").hexdigest()
    assert download(src.as_uri(), dest, md5=good).read_bytes() == b"tampered payload"
    assert os.listdir(dest.parent) == ["data.bin"]
