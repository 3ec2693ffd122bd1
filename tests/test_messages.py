"""Error messages point to what helps in their context."""

from __future__ import annotations

import numpy as np

from transferkit.cli import main


def test_gap_of_a_table_against_images_does_not_suggest_image_size(tmp_path, capsys):
    np.savez(tmp_path / "t.npz", X=np.random.default_rng(0).random((50, 6)).astype("float32"), y=np.arange(50) % 2)
    rc = main(["gap", "--source", str(tmp_path / "t.npz"), "--target", "digits"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:")
    assert "feature table" in err[0] and "--image-size" not in err[0]
