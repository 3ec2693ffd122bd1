"""The report opens in a real browser: headless Chromium loads every embedded image.

Chromium is required, not optional: CI installs it with ``.ci/install-browser.sh``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from transferkit.analysis import write_report
from transferkit.cli import main

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]
CHECK = """<script>
window.addEventListener('load', function () {
  var r = Array.prototype.map.call(document.images, function (i) {
    return {ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, alt: i.alt};
  });
  var pre = document.createElement('pre');
  pre.id = 'img-check';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def _images_in_browser(html_file: Path, profile: Path) -> list[dict]:
    chromium = shutil.which(CHROMIUM) or shutil.which("chromium")
    assert chromium, f"{CHROMIUM} not found: the report browser test needs Chromium (run .ci/install-browser.sh)"
    probe = html_file.with_name(html_file.stem + ".probe.html")
    probe.write_text(html_file.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    proc = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"chromium did not run the check (rc {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    run = root / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--test-data", "digits",
                 "--run-dir", str(run), "--quiet", "--device", "cpu"]) == 0
    return write_report([run], root / "report.html").html


def test_every_image_of_a_real_report_loads_in_chromium(report, tmp_path) -> None:
    imgs = _images_in_browser(report, tmp_path / "profile")
    assert len(imgs) == report.read_text().count("<img")
    assert len(imgs) == 2
    assert all(i["ok"] for i in imgs), imgs
    assert all(i["w"] > 300 for i in imgs)  # real figures, not icons


def test_the_browser_check_catches_a_broken_image(report, tmp_path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace("<h3>Learning curves</h3>",
                                                 "<h3>Learning curves</h3><img alt='bad' src='data:image/png;base64,AAAA'>"))
    imgs = _images_in_browser(broken, tmp_path / "profile")
    assert [i["ok"] for i in imgs].count(False) == 1
