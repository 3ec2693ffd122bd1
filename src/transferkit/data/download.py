"""Where data lives, and how a missing file is fetched and verified.

Lookup order for a file: ``--data-dir``, then ``$TRANSFERKIT_DATA_DIR``, then
the cache folder (``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``). Only a
file found nowhere is downloaded, into the cache, and kept only when its MD5
matches the published one. Offline, the error names the file and the folders
to put it in.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..errors import TransferkitError


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit"))


def search_roots(data_dir: str | Path | None = None) -> list[Path]:
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir))
    env = os.environ.get("TRANSFERKIT_DATA_DIR")
    if env:
        roots.append(Path(env))
    roots.append(cache_dir())
    return roots


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_file(candidates: Sequence[str], data_dir: str | Path | None = None) -> Path | None:
    """First existing ``root / candidate`` over the search roots."""
    for root in search_roots(data_dir):
        for rel in candidates:
            p = root / rel
            if p.is_file():
                return p
    return None


def download(url: str, dest: Path, md5: str | None) -> Path:
    """Fetch ``url`` to ``dest`` (via a temporary name) and verify its MD5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TransferkitError(f"could not download {url}: {exc}") from None
    if md5 is not None:
        got = md5sum(tmp)
        if got != md5:
            tmp.unlink(missing_ok=True)
            raise TransferkitError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {got}; the file was deleted"
            )
    os.replace(tmp, dest)
    return dest


def locate(
    dataset: str,
    candidates: Sequence[str],
    urls: Sequence[str] = (),
    md5: str | None = None,
    data_dir: str | Path | None = None,
    allow_download: bool = True,
) -> Path:
    """Find a dataset file locally, else download it into the cache, else explain."""
    found = find_file(candidates, data_dir)
    if found is not None:
        return found
    roots = search_roots(data_dir)
    if allow_download and urls and os.environ.get("TRANSFERKIT_OFFLINE") != "1":
        dest = cache_dir() / candidates[0]
        errors = []
        for url in urls:
            try:
                return download(url, dest, md5)
            except TransferkitError as exc:
                errors.append(str(exc))
    where = " or ".join(str(r / candidates[0]) for r in roots)
    raise TransferkitError(
        f"{dataset}: file '{Path(candidates[0]).name}' not found (looked in {', '.join(map(str, roots))}) "
        f"and it could not be downloaded; put it at {where} or pass --data-dir"
    )
